//! A rule's totals shared fairly among the machines that report (#32 item 5): what a set's
//! sample lines cost in bytes, how a set is cut to a number of series and of bytes, and the
//! room a set has: what the rule's total leaves, but never less than an equal share of it.
//!
//! Owns these rules as pure functions of the families and the counts. Does not own which
//! sets are held nor when a held set is cut to its share (`store`).

use std::collections::BTreeMap;

use super::Family;
use super::parse::Drop;

/// About the bytes a sample's held line takes: its family name, the set's own labels
/// (`prefix_len`), its own labels (quoted, with `=` and `,`), a value and the line's end.
pub(super) fn sample_bytes(name: &str, prefix_len: usize, labels: &[(String, String)]) -> usize {
    let own: usize = labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    name.len() + prefix_len + own + 26
}

/// About the bytes a set's held lines take.
pub(super) fn set_bytes(families: &[Family], prefix_len: usize) -> usize {
    families
        .iter()
        .flat_map(|f| {
            f.samples
                .iter()
                .map(|(l, _)| sample_bytes(&f.name, prefix_len, l))
        })
        .sum()
}

/// The room a set has under a rule's `cap` when the other sets of the rule hold `others` and
/// there are `sets` sets with this one: what the total leaves, and never less than an equal
/// share (the sets over their share are cut to make it, see `store`).
pub(super) fn room(cap: usize, others: usize, sets: usize) -> usize {
    cap.saturating_sub(others).max(cap / sets.max(1))
}

/// Keep the samples of `families`, in order, while they fit in `series` and `bytes`; the rest
/// are counted in `dropped` under `why`, and families left empty go.
pub(super) fn cut(
    families: &mut Vec<Family>,
    prefix_len: usize,
    series: usize,
    bytes: usize,
    why: Drop,
    dropped: &mut BTreeMap<Drop, u64>,
) {
    let (mut n, mut b) = (0usize, 0usize);
    let mut over = 0u64;
    for f in families.iter_mut() {
        let name = f.name.clone();
        f.samples.retain(|(labels, _)| {
            let cost = sample_bytes(&name, prefix_len, labels);
            if over == 0 && n < series && b.saturating_add(cost) <= bytes {
                n += 1;
                b += cost;
                true
            } else {
                over += 1;
                false
            }
        });
    }
    if over > 0 {
        *dropped.entry(why).or_default() += over;
    }
    families.retain(|f| !f.samples.is_empty());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::script_metrics::parse::Kind;

    fn family(name: &str, values: &[&str]) -> Family {
        Family {
            name: name.into(),
            kind: Kind::Gauge,
            help: None,
            samples: values
                .iter()
                .map(|v| (vec![("v".to_string(), v.to_string())], 1.0))
                .collect(),
        }
    }

    // See: #32 item 5
    #[test]
    fn room_is_never_less_than_an_equal_share() {
        // Two noisy sets hold the whole total: a third still has a third of it.
        assert_eq!(room(1000, 1000, 3), 333);
        assert_eq!(room(1000, 200, 3), 800);
        assert_eq!(room(1000, 0, 1), 1000);
    }

    #[test]
    fn a_cut_keeps_samples_in_order_while_they_fit_in_series_and_bytes() {
        let mut f = vec![family("a", &["1", "2"]), family("b", &["3"])];
        let one = sample_bytes("a", 10, &[("v".into(), "1".into())]);
        let mut dropped = BTreeMap::new();
        cut(&mut f, 10, 10, 2 * one, Drop::MaxBytes, &mut dropped);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].samples.len(), 2);
        assert_eq!(dropped[&Drop::MaxBytes], 1);
        let mut f = vec![family("a", &["1", "2"]), family("b", &["3"])];
        cut(&mut f, 10, 1, usize::MAX, Drop::MaxTotal, &mut dropped);
        assert_eq!(set_bytes(&f, 10), one);
        assert_eq!(dropped[&Drop::MaxTotal], 2);
    }
}

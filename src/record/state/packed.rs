//! The keys of the state's indexes that grow with every result, packed (#34): a result done
//! (or counted as not run) and a final action seen hold the tenant and the action id in one
//! allocation instead of two `String`s, in 32 and 24 bytes of their set instead of 56 and 48;
//! the series of the newest run remembered (`ran`) its tenant, machine and script in one
//! allocation and 32 bytes instead of three and 72.
//!
//! Owns the packing and what a packed key gives back ([`ResultKey`], [`SeriesKey`], the
//! tenant, the action id), and the order of a packed series (that of its [`SeriesKey`]).
//! Does not own the indexes nor the rules over them (`state`), nor the records (`model`).

use std::cmp::Ordering;

use super::model::{ResultKey, SeriesKey};

/// A tenant and an action id, side by side in one allocation, and where the first ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Pair {
    text: Box<str>,
    split: usize,
}

impl Pair {
    pub(super) fn new(tenant: &str, action_id: &str) -> Pair {
        let mut text = String::with_capacity(tenant.len() + action_id.len());
        text.push_str(tenant);
        text.push_str(action_id);
        Pair {
            text: text.into_boxed_str(),
            split: tenant.len(),
        }
    }

    pub(super) fn tenant(&self) -> &str {
        self.text.get(..self.split).unwrap_or_default()
    }

    pub(super) fn action_id(&self) -> &str {
        self.text.get(self.split..).unwrap_or_default()
    }
}

/// A [`ResultKey`] packed: (tenant, action id) and the command's index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Done {
    pair: Pair,
    index: u32,
}

impl Done {
    pub(super) fn new(key: &ResultKey) -> Done {
        Done {
            pair: Pair::new(&key.tenant, &key.action_id),
            index: key.index,
        }
    }

    pub(super) fn tenant(&self) -> &str {
        self.pair.tenant()
    }

    pub(super) fn key(&self) -> ResultKey {
        ResultKey {
            tenant: self.pair.tenant().to_string(),
            action_id: self.pair.action_id().to_string(),
            index: self.index,
        }
    }
}

/// A [`SeriesKey`] packed: tenant, machine and script side by side, and where the first two
/// end. Ordered as its `SeriesKey`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Series {
    text: Box<str>,
    ends: [usize; 2],
}

impl Series {
    pub(super) fn new((tenant, machine, script): &SeriesKey) -> Series {
        let mut text = String::with_capacity(tenant.len() + machine.len() + script.len());
        text.push_str(tenant);
        text.push_str(machine);
        let ends = [tenant.len(), text.len()];
        text.push_str(script);
        Series {
            text: text.into_boxed_str(),
            ends,
        }
    }

    pub(super) fn parts(&self) -> (&str, &str, &str) {
        let [t, m] = self.ends;
        let part = |range: std::ops::Range<usize>| self.text.get(range).unwrap_or_default();
        (part(0..t), part(t..m), part(m..self.text.len()))
    }

    pub(super) fn tenant(&self) -> &str {
        self.parts().0
    }

    pub(super) fn key(&self) -> SeriesKey {
        let (t, m, s) = self.parts();
        (t.to_string(), m.to_string(), s.to_string())
    }
}

impl Ord for Series {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl PartialOrd for Series {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// See: #34. A packed key gives back what it was made of, whatever the split (a tenant
    /// that is a prefix of another does not make two keys one), in less than half the room.
    #[test]
    fn a_packed_key_gives_back_what_it_holds_in_less_room() {
        let key = ResultKey {
            tenant: "contoso".into(),
            action_id: "7f0c0e4a-7a55-4b0b-9a3e-0f2f0d1c2b3a".into(),
            index: 3,
        };
        let done = Done::new(&key);
        assert_eq!(done.key(), key);
        assert_eq!(done.tenant(), "contoso");
        assert_ne!(Pair::new("ab", "c"), Pair::new("a", "bc"));
        assert_eq!(Pair::new("a", "bc").action_id(), "bc");
        assert_eq!(Pair::new("", "").tenant(), "");
        assert!(size_of::<Done>() <= size_of::<ResultKey>() * 3 / 5);
        assert!(size_of::<Pair>() <= size_of::<(String, String)>() / 2);
    }

    /// See: #34. A packed series gives back its key, and packed series sort as their keys
    /// do, whatever the splits.
    #[test]
    fn a_packed_series_gives_back_its_key_and_sorts_as_it() {
        let key = |t: &str, m: &str, s: &str| (t.to_string(), m.to_string(), s.to_string());
        let mut keys = vec![
            key("t", "ws-1", "a.ps1"),
            key("t", "ws-10", "a.ps1"),
            key("t", "ws-1a", ".ps1"),
            key("tw", "s-1", "a.ps1"),
            key("", "", ""),
            key("t", "", "ws-1a.ps1"),
        ];
        let mut packed: Vec<Series> = keys.iter().map(Series::new).collect();
        keys.sort();
        packed.sort();
        assert_eq!(packed.iter().map(Series::key).collect::<Vec<_>>(), keys);
        assert_eq!(packed[1].tenant(), "t");
        assert_ne!(
            Series::new(&key("t", "ws-1", "a")),
            Series::new(&key("t", "ws-", "1a"))
        );
        assert!(size_of::<Series>() * 2 <= size_of::<SeriesKey>());
    }
}

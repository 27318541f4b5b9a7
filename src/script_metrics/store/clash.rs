//! One family name across sets (#32 item 3): two script-output sets (two rules, or two
//! machines or scripts) that give the same family name with different types, or a counter
//! `c` (exposed as `c_total`) beside a gauge or untyped `c_total`, would put one name in two
//! families of the exposition (two `# TYPE` lines: Prometheus keeps an arbitrary one, or
//! refuses the scrape). The rule: the family held first wins; a later set's family that
//! clashes with one another set holds is left out of that set, each of its samples counted as
//! dropped (`reason="name_clash"`, as a clash within one output is). A family's help is the
//! one of its first set in key order (one `# HELP` line whatever the sets say; a different
//! help is no clash).
//!
//! Owns what a clash is and leaving the clashing families out. Does not own how sets are held
//! (`store`) nor clashes within one output (`parse`).

use std::collections::BTreeMap;

use super::parse::{Drop, Kind};
use super::{Family, Inner, SetKey};

/// The kind of family `name` as a set other than `key` holds it, if another set holds it.
fn held_by_another(inner: &Inner, key: &SetKey, name: &str) -> Option<Kind> {
    let sets = inner.families.get(name)?;
    sets.iter()
        .find(|(k, _)| k.as_ref() != key)
        .map(|(_, f)| f.kind)
}

/// Whether family `name` of `kind`, given by the set of `key`, clashes with a family another
/// set holds: the same name of another kind, a counter whose samples' name (`name_total`) is
/// another family's, or a family named as another set's counter's samples are.
pub(super) fn clashes(inner: &Inner, key: &SetKey, name: &str, kind: Kind) -> bool {
    if held_by_another(inner, key, name).is_some_and(|held| held != kind) {
        return true;
    }
    if kind == Kind::Counter && held_by_another(inner, key, &format!("{name}_total")).is_some() {
        return true;
    }
    name.strip_suffix("_total")
        .is_some_and(|base| held_by_another(inner, key, base) == Some(Kind::Counter))
}

/// Leave out of `families` (the set of `key` about to be held) those that clash with a family
/// another set holds, counting their samples in `dropped` as [`Drop::NameClash`].
pub(super) fn leave_out(
    inner: &Inner,
    key: &SetKey,
    families: &mut Vec<Family>,
    dropped: &mut BTreeMap<Drop, u64>,
) {
    families.retain(|f| {
        let clash = clashes(inner, key, &f.name, f.kind);
        if clash {
            *dropped.entry(Drop::NameClash).or_default() += f.samples.len() as u64;
        }
        !clash
    });
}

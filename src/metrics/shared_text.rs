//! Label values held once for every series that carries them. See: #34
//!
//! A tenant's ~200 series each held their own copy of the tenant's name, and each of a
//! machine's series its own copy of the machine's name, endpoint, status and script: at
//! 2,000 tenants most of the label bytes in memory were the same few strings again. A
//! [`LabelValue`] is a shared, immutable string: made from text already in use, it is that
//! text (a reference count more), so every label set of a family with a `tenant` label holds
//! pointers, not copies.
//!
//! Owns [`LabelValue`] and the pool of values in use. A value leaves the pool once no label set
//! holds it (the pool drops the values only it holds when it has grown to twice its size after
//! the last such sweep), so values from the API (machine names, scripts) do not pile up as
//! machines come and go. Does not own the label sets (`labels`) nor the families.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value held once however many label sets carry it (see the module header). One
/// pointer wide (an `Arc<str>` is two): a label set of three values takes 24 bytes in its
/// family's table, not 72 as three `String`s did.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelValue(Arc<Box<str>>);

/// A value of the pool, found by its text.
#[derive(PartialEq, Eq, Hash)]
struct Pooled(Arc<Box<str>>);

impl Borrow<str> for Pooled {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The values in use, and the size at which the next sweep runs.
struct Pool {
    values: HashSet<Pooled>,
    sweep_at: usize,
}

/// The pool is never swept below this many values: a sweep walks it all.
const MIN_SWEEP: usize = 4096;

static POOL: LazyLock<RwLock<Pool>> = LazyLock::new(|| {
    RwLock::new(Pool {
        values: HashSet::new(),
        sweep_at: MIN_SWEEP,
    })
});

impl LabelValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pool holds `s` now (tests).
    #[cfg(test)]
    fn pooled(s: &str) -> bool {
        POOL.read()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .contains(s)
    }
}

impl From<&str> for LabelValue {
    fn from(s: &str) -> Self {
        if let Some(v) = POOL
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .get(s)
        {
            return LabelValue(v.0.clone());
        }
        let mut pool = POOL.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = pool.values.get(s) {
            return LabelValue(v.0.clone());
        }
        if pool.values.len() >= pool.sweep_at {
            // Values only the pool holds: no label set carries them any more.
            pool.values.retain(|v| Arc::strong_count(&v.0) > 1);
            pool.sweep_at = (pool.values.len() * 2).max(MIN_SWEEP);
        }
        let v = Arc::new(Box::<str>::from(s));
        pool.values.insert(Pooled(v.clone()));
        LabelValue(v)
    }
}

impl From<String> for LabelValue {
    fn from(s: String) -> Self {
        LabelValue::from(s.as_str())
    }
}

impl From<&String> for LabelValue {
    fn from(s: &String) -> Self {
        LabelValue::from(s.as_str())
    }
}

impl Deref for LabelValue {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for LabelValue {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for LabelValue {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for LabelValue {
    fn eq(&self, other: &str) -> bool {
        **self.0 == *other
    }
}

impl PartialEq<&str> for LabelValue {
    fn eq(&self, other: &&str) -> bool {
        **self.0 == **other
    }
}

impl PartialEq<String> for LabelValue {
    fn eq(&self, other: &String) -> bool {
        **self.0 == *other.as_str()
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, &self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_held_once() {
        let a = LabelValue::from("shared-text-test-tenant");
        let b = LabelValue::from(String::from("shared-text-test-tenant"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "shared-text-test-tenant");
        assert_eq!(
            format!("{a} {a:?}"),
            "shared-text-test-tenant \"shared-text-test-tenant\""
        );
        let c = LabelValue::from("shared-text-test-other");
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert!(c < a);
        // One pointer in every label set that carries it.
        assert_eq!(size_of::<LabelValue>(), size_of::<usize>());
    }

    /// Values no label set holds leave the pool: machines that come and go do not pile up.
    #[test]
    fn values_no_one_holds_are_swept() {
        let kept = LabelValue::from("shared-text-sweep-kept");
        for i in 0..(MIN_SWEEP * 8) {
            drop(LabelValue::from(format!("shared-text-sweep-{i}").as_str()));
        }
        // Each sweep dropped the ones made before it (other tests' values stay).
        assert!(!LabelValue::pooled("shared-text-sweep-0"));
        assert!(LabelValue::pooled("shared-text-sweep-kept"));
        let again = LabelValue::from("shared-text-sweep-kept");
        assert!(Arc::ptr_eq(&kept.0, &again.0));
    }
}

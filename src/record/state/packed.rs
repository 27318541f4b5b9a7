//! The keys of the state's exactly-once sets that grow with every result, packed (#34): a
//! result done (or counted as not run) and a final action seen hold the tenant and the action
//! id in one allocation instead of two `String`s, in 32 and 24 bytes of their set instead of
//! 56 and 48.
//!
//! Owns the packing and what a packed key gives back ([`ResultKey`], the tenant, the action
//! id). Does not own the sets nor the rules over them (`state`), nor the records (`model`).

use super::model::ResultKey;

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
}

//! What the machine-context refresh exposed for one machine, held between checks (#34): the
//! label values of its `mde_machine_info` series and of its `mde_machine_tag` series, packed
//! in one string, without the tenant (the refresh's own) nor the label structs' room.
//!
//! Owns the packing and the labels it gives back. Does not own when a machine is exposed or
//! unexposed (`machines`), nor the families (`metrics`).

use crate::metrics::{MachineInfoLabels, MachineTagLabels};

/// The values, one after another: the machine, its id, device group, OS platform and health
/// status, then its tags; `ends` says where each one ends. Held per machine for as long as it
/// has series: as label structs (six `String`s and a `Vec` of tags with three more each) it
/// took 192 bytes of the map and six allocations or more, in one allocation and 32 bytes now.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Exposed {
    text: Box<str>,
    ends: Box<[usize]>,
}

/// The values before the tags.
const INFO: usize = 5;

impl Exposed {
    pub(super) fn new(info: &MachineInfoLabels, tags: &[MachineTagLabels]) -> Exposed {
        let values = [
            &info.machine,
            &info.machine_id,
            &info.rbac_group,
            &info.os_platform,
            &info.health_status,
        ]
        .into_iter()
        .chain(tags.iter().map(|t| &t.tag));
        let mut text = String::new();
        let mut ends = Vec::with_capacity(INFO + tags.len());
        for v in values {
            text.push_str(v);
            ends.push(text.len());
        }
        Exposed {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    fn value(&self, i: usize) -> String {
        let end = |i: usize| self.ends.get(i).copied().unwrap_or_default();
        let start = i.checked_sub(1).map_or(0, end);
        self.text.get(start..end(i)).unwrap_or_default().to_string()
    }

    /// How many tags the machine shows.
    pub(super) fn tag_count(&self) -> usize {
        self.ends.len().saturating_sub(INFO)
    }

    /// The labels of its `mde_machine_info` series, of `tenant`.
    pub(super) fn info(&self, tenant: &str) -> MachineInfoLabels {
        MachineInfoLabels {
            tenant: tenant.to_string(),
            machine: self.value(0),
            machine_id: self.value(1),
            rbac_group: self.value(2),
            os_platform: self.value(3),
            health_status: self.value(4),
        }
    }

    /// The labels of its `mde_machine_tag` series, of `tenant`.
    pub(super) fn tags(&self, tenant: &str) -> Vec<MachineTagLabels> {
        (INFO..self.ends.len())
            .map(|i| MachineTagLabels {
                tenant: tenant.to_string(),
                machine: self.value(0),
                tag: self.value(i),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// See: #34. What is held gives back the labels exposed, tags included, in less room than
    /// the labels took; values that would run together as one string stay apart.
    #[test]
    fn a_machine_exposed_gives_back_its_labels_in_less_room() {
        let info = MachineInfoLabels {
            tenant: "contoso".into(),
            machine: "ws-1.contoso.com".into(),
            machine_id: "1f0e".into(),
            rbac_group: "".into(),
            os_platform: "Windows11".into(),
            health_status: "Active".into(),
        };
        let tag = |t: &str| MachineTagLabels {
            tenant: "contoso".into(),
            machine: "ws-1.contoso.com".into(),
            tag: t.into(),
        };
        let tags = vec![tag("prod"), tag(""), tag("eu")];
        let held = Exposed::new(&info, &tags);
        assert_eq!(held.info("contoso"), info);
        assert_eq!(held.tags("contoso"), tags);
        assert_eq!(held.tag_count(), 3);
        let bare = Exposed::new(&info, &[]);
        assert_eq!((bare.tag_count(), bare.tags("contoso")), (0, vec![]));
        assert_ne!(bare, held);
        let mut moved = info.clone();
        moved.rbac_group = "W".into();
        moved.os_platform = "indows11".into();
        assert_ne!(
            Exposed::new(&moved, &[]),
            bare,
            "the same text, other values"
        );
        assert!(size_of::<Exposed>() * 4 <= size_of::<MachineInfoLabels>());
    }
}

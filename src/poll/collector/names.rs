//! Which machine a `machine` label stands for: the first machine id seen with a DNS name
//! keeps the name; another machine id reporting the same `computerDnsName` gets a label of its
//! own, `<name> (<machine id>)`, so it can never overwrite the first machine's per-machine
//! series (a failing machine shown as passing). See: #32 item 8
//!
//! Owns that decision and the names seen by this collector (in memory: after a restart the
//! first machine id seen with a name keeps it again). Does not own the series themselves
//! (`crate::record`), nor the machine context (`crate::poll::machines`).

use std::collections::HashMap;

use crate::api::model::MachineAction;

/// The DNS names seen, each with the machine id that has it.
#[derive(Debug, Default)]
pub(super) struct MachineNames {
    /// Lower-cased `computerDnsName` (DNS names ignore case) → machine id. Boxed `str`s: kept
    /// for every machine a tenant ever ran a command on, and a `String`'s spare capacity word
    /// made each entry half as large again (#34).
    owners: HashMap<Box<str>, Box<str>>,
}

impl MachineNames {
    /// The `machine` label of `a`'s series: its DNS name when that name is its own (or no id
    /// comes with it), else the name and its id. Logs the first time an id is given a label
    /// of its own.
    pub(super) fn label(&mut self, tenant: &str, a: &MachineAction) -> String {
        let name = a.machine();
        let (Some(dns), Some(id)) = (
            a.computer_dns_name.as_deref().filter(|d| !d.is_empty()),
            a.machine_id.as_deref().filter(|i| !i.is_empty()),
        ) else {
            return name.to_string();
        };
        let owner = self
            .owners
            .entry(dns.to_ascii_lowercase().into())
            .or_insert_with(|| id.into());
        if **owner == *id {
            return name.to_string();
        }
        // A DNS name has no space nor parenthesis: this label is no real machine's name.
        let own = format!("{name} ({id})");
        if self
            .owners
            .insert(own.to_ascii_lowercase().into(), id.into())
            .is_none()
        {
            tracing::warn!(tenant, machine = %name, machine_id = %id, label = %own, "another machine id reports a computerDnsName already seen with a different machine id: its series are labelled with its id, so that neither machine overwrites the other's");
        }
        own
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn action(dns: Option<&str>, id: Option<&str>) -> MachineAction {
        serde_json::from_value(serde_json::json!({
            "id": "a", "type": "LiveResponse", "status": "Succeeded",
            "computerDnsName": dns, "machineId": id,
        }))
        .unwrap()
    }

    // See: #32 item 8
    #[test]
    fn a_second_machine_id_with_a_name_gets_a_label_of_its_own() {
        let mut n = MachineNames::default();
        let first = action(Some("ws-1.contoso.com"), Some("id-1"));
        let other = action(Some("WS-1.contoso.com"), Some("id-2"));
        assert_eq!(n.label("t", &first), "ws-1.contoso.com");
        assert_eq!(n.label("t", &other), "WS-1.contoso.com (id-2)");
        // Each keeps its label.
        assert_eq!(n.label("t", &first), "ws-1.contoso.com");
        assert_eq!(n.label("t", &other), "WS-1.contoso.com (id-2)");
        // Without a name, the id; without an id, the name as before.
        assert_eq!(n.label("t", &action(None, Some("id-3"))), "id-3");
        assert_eq!(
            n.label("t", &action(Some("ws-1.contoso.com"), None)),
            "ws-1.contoso.com"
        );
        // Two names held (#34): an entry of the map is two pointers and two lengths.
        assert_eq!(n.owners.len(), 2);
        let (name, id) = n.owners.iter().next().unwrap();
        assert!(size_of_val(name) + size_of_val(id) <= 2 * size_of::<&str>());
    }
}

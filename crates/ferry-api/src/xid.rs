//! NVIDIA XID events and what each means for a device's health, after NVIDIA's XID catalogue
//! (its "resolution bucket", the immediate action it recommends).
//!
//! Three classes, each with one consequence in Ferry:
//! - [`XidClass::Fatal`]: the device cannot be trusted with any work (uncontained memory
//!   errors, a device fallen off the bus): it is tainted so that nothing new lands on it, and
//!   the pods on it are failed so that their jobs are placed again on healthy cards.
//! - [`XidClass::NeedsReset`]: the device keeps its running work but must be reset before it
//!   takes more (a contained error, a firmware halt, pending row remaps): it is cordoned, and
//!   its pods finish where they are.
//! - [`XidClass::Informational`]: an application's own error (a page fault, an engine
//!   exception) or a corrected error: counted and recorded, the device stays healthy.
//!
//! An XID the catalogue does not list is [`XidClass::Informational`] with
//! [`Xid::known`] false: it is recorded and logged as unknown, never acted on blindly.

use serde::{Deserialize, Serialize};

/// What an XID means for its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum XidClass {
    /// Recorded; the device stays healthy.
    Informational,
    /// Running work stays; nothing new lands until the device is reset.
    NeedsReset,
    /// The device is unusable: nothing new lands and its pods are failed and re-placed.
    Fatal,
}

impl XidClass {
    /// The class's name as written in conditions, Events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            XidClass::Informational => "Informational",
            XidClass::NeedsReset => "NeedsReset",
            XidClass::Fatal => "Fatal",
        }
    }
}

impl std::fmt::Display for XidClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One XID as the catalogue describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xid {
    /// The XID number.
    pub code: u64,
    /// What happened, in a few words.
    pub description: &'static str,
    /// What it means for the device.
    pub class: XidClass,
    /// False for a number the catalogue does not list.
    pub known: bool,
}

use XidClass::{Fatal, Informational, NeedsReset};

/// The XIDs data-centre GPUs (Ampere and newer) report, with their class.
const CATALOGUE: &[(u64, &str, XidClass)] = &[
    (
        8,
        "GPU stopped processing (channel idle timeout)",
        Informational,
    ),
    (13, "graphics engine exception", Informational),
    (31, "GPU memory page fault", Informational),
    (32, "invalid or corrupted push buffer stream", Informational),
    (38, "driver firmware error", NeedsReset),
    (
        43,
        "GPU stopped processing (one application's channel reset)",
        Informational,
    ),
    (
        45,
        "preemptive cleanup after previous errors",
        Informational,
    ),
    (46, "GPU stopped processing", NeedsReset),
    (48, "double-bit ECC error", Fatal),
    (
        61,
        "internal micro-controller breakpoint or warning",
        NeedsReset,
    ),
    (62, "internal micro-controller halt", NeedsReset),
    (
        63,
        "ECC page retirement or row remapping recorded (reset to activate)",
        NeedsReset,
    ),
    (64, "ECC page retirement or row remapping failed", Fatal),
    (68, "video decoder exception", Informational),
    (69, "graphics engine class error", Informational),
    (74, "NVLink error", NeedsReset),
    (79, "GPU has fallen off the bus", Fatal),
    (92, "high single-bit ECC error rate", Informational),
    (
        94,
        "contained ECC error (the application that hit it ended)",
        NeedsReset,
    ),
    (95, "uncontained ECC error", Fatal),
    (109, "context switch timeout", Informational),
    (119, "GSP RPC timeout", NeedsReset),
    (120, "GSP error", NeedsReset),
    (121, "C2C link corrected error", Informational),
    (140, "unrecovered ECC error", Fatal),
    (143, "GPU initialisation failure", Fatal),
];

/// The catalogue's entry for XID `code`; an unlisted one is informational and unknown.
pub fn classify(code: u64) -> Xid {
    match CATALOGUE.iter().find(|(c, _, _)| *c == code) {
        Some(&(code, description, class)) => Xid {
            code,
            description,
            class,
            known: true,
        },
        None => Xid {
            code,
            description: "an XID the catalogue does not list",
            class: Informational,
            known: false,
        },
    }
}

/// Every XID the catalogue lists, in order.
pub fn catalogue() -> impl Iterator<Item = Xid> {
    CATALOGUE.iter().map(|&(code, _, _)| classify(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faults_that_take_a_card_away_are_fatal() {
        for code in [48, 64, 79, 95, 140] {
            assert_eq!(classify(code).class, Fatal, "XID {code}");
        }
        assert_eq!(classify(94).class, NeedsReset);
        assert_eq!(classify(63).class, NeedsReset);
        assert_eq!(classify(31).class, Informational);
        assert_eq!(classify(13).class, Informational);
    }

    #[test]
    fn an_unlisted_xid_is_recorded_not_acted_on() {
        let x = classify(9999);
        assert!(!x.known);
        assert_eq!(x.class, Informational);
        assert!(classify(79).known);
    }

    #[test]
    fn the_catalogue_is_sorted_and_unique() {
        let codes: Vec<u64> = catalogue().map(|x| x.code).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
        assert!(catalogue().all(|x| x.known && !x.description.is_empty()));
    }

    #[test]
    fn classes_order_by_severity() {
        assert!(Informational < NeedsReset && NeedsReset < Fatal);
        assert_eq!(
            serde_json::to_string(&NeedsReset).unwrap(),
            "\"NeedsReset\""
        );
    }
}

//! GPU discovery: NVIDIA devices through NVML, or devices declared with `--fake-gpus`.
//!
//! NVML (`libnvidia-ml.so.1`) is loaded at run time, so the agent builds and starts on machines
//! without a driver: discovery then reports no devices and says why.
//!
//! # `--fake-gpus` syntax
//!
//! A comma-separated list of groups, each `[COUNT x] MODEL [: MEMORY]`:
//!
//! - `8xA100-80GB`: eight `A100-80GB` devices; memory is read from the `80GB` in the name.
//! - `4xA100-80GB,2xT4`: six devices, indices 0-3 are A100s and 4-5 are T4s; the T4's memory
//!   comes from a small table of well-known models ([`known_memory_mib`]).
//! - `2xMyAccel:16384` or `2xMyAccel:16Gi`: explicit memory per device, in MiB without a
//!   suffix, or with `Mi`/`MiB`/`M`/`MB` or `Gi`/`GiB`/`G`/`GB` (a GPU "GB" is 1024 MiB).
//! - `A100` alone means one device.
//!
//! Model names must be valid Kubernetes label values (letters, digits, `-`, `_`, `.`, at most
//! 63 characters) because the node carries the model as the label `ferry.dev/gpu-model`.

use std::fmt::Write as _;

use ferry_api::gpu::GpuDevice;
use thiserror::Error;

/// At most this many fake devices on one node.
pub const MAX_FAKE_GPUS: u32 = 1024;

/// One group of a `--fake-gpus` value, such as `8xA100-80GB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeGpuGroup {
    /// How many devices of this model.
    pub count: u32,
    /// The model name, as it will appear on the node.
    pub model: String,
    /// Memory per device in MiB.
    pub memory_mib: u64,
}

/// A `--fake-gpus` value that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid --fake-gpus value {spec:?}: {reason} (expected e.g. 8xA100-80GB, 4xA100-80GB,2xT4 or 2xMyGPU:16384)"
)]
pub struct GpuSpecError {
    /// The whole value given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Memory in MiB of well-known NVIDIA models, used when a fake model name carries no size.
const KNOWN_MODELS: &[(&str, u64)] = &[
    ("K80", 11441),
    ("P4", 7680),
    ("P100", 16384),
    ("V100", 16384),
    ("T4", 15360),
    ("A10", 23028),
    ("A10G", 23028),
    ("A30", 24576),
    ("A40", 46068),
    ("A100", 40960),
    ("L4", 23034),
    ("L40", 46068),
    ("L40S", 46068),
    ("H100", 81559),
    ("H200", 143771),
    ("B200", 183359),
    ("RTX3090", 24576),
    ("RTX4090", 24564),
];

/// Memory per device in MiB implied by a model name: a size token such as `80GB` in the name
/// (`A100-80GB`, `NVIDIA-H100-80GB-HBM3`), else the table of well-known models (`T4`, `H100`).
pub fn known_memory_mib(model: &str) -> Option<u64> {
    let tokens: Vec<&str> = model.split(['-', '_', ' ']).collect();
    for t in &tokens {
        let upper = t.to_ascii_uppercase();
        for suffix in ["GIB", "GB", "GI", "G"] {
            if let Some(n) = upper.strip_suffix(suffix)
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && let Ok(n) = n.parse::<u64>()
            {
                return n.checked_mul(1024).filter(|&m| m > 0);
            }
        }
    }
    let first = tokens
        .iter()
        .find(|t| !t.eq_ignore_ascii_case("nvidia") && !t.eq_ignore_ascii_case("tesla"))?;
    KNOWN_MODELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(first))
        .map(|&(_, mib)| mib)
}

/// Parses a `--fake-gpus` value (see the module documentation for the syntax).
pub fn parse_fake_gpus(spec: &str) -> Result<Vec<FakeGpuGroup>, GpuSpecError> {
    let fail = |reason: String| GpuSpecError {
        spec: spec.to_string(),
        reason,
    };
    if spec.trim().is_empty() {
        return Err(fail("it is empty".into()));
    }
    let mut groups = Vec::new();
    let mut total: u64 = 0;
    for raw in spec.split(',') {
        let group = raw.trim();
        if group.is_empty() {
            return Err(fail("a group between commas is empty".into()));
        }
        let (head, memory) = match group.split_once(':') {
            Some((h, m)) => (h.trim(), Some(m.trim())),
            None => (group, None),
        };
        // COUNT x MODEL: the count is the leading digits, if followed by 'x'.
        let digits = head.bytes().take_while(u8::is_ascii_digit).count();
        let (count, model) = if digits > 0 && head[digits..].starts_with(['x', 'X']) {
            let count: u32 = head[..digits]
                .parse()
                .map_err(|_| fail(format!("count {:?} is too large", &head[..digits])))?;
            (count, head[digits + 1..].trim())
        } else if digits > 0 && digits == head.len() {
            return Err(fail(format!("group {group:?} has a count but no model")));
        } else {
            (1, head)
        };
        if count == 0 {
            return Err(fail(format!("group {group:?} declares zero devices")));
        }
        if model.is_empty() {
            return Err(fail(format!("group {group:?} has no model name")));
        }
        if let Some(reason) = invalid_label_value(model) {
            return Err(fail(format!("model {model:?} {reason}")));
        }
        let memory_mib = match memory {
            Some(m) => parse_memory(m).ok_or_else(|| {
                fail(format!(
                    "memory {m:?} of group {group:?} is not a positive size such as 16384, 16Gi or 512Mi"
                ))
            })?,
            None => known_memory_mib(model).ok_or_else(|| {
                fail(format!(
                    "the memory of model {model:?} is unknown; give it explicitly, e.g. {count}x{model}:16384 (MiB)"
                ))
            })?,
        };
        total += u64::from(count);
        if total > u64::from(MAX_FAKE_GPUS) {
            return Err(fail(format!("more than {MAX_FAKE_GPUS} devices in total")));
        }
        groups.push(FakeGpuGroup {
            count,
            model: model.to_string(),
            memory_mib,
        });
    }
    Ok(groups)
}

/// Parses an explicit memory size into MiB.
fn parse_memory(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let factor = match s[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "MI" | "MIB" | "M" | "MB" => 1,
        "GI" | "GIB" | "G" | "GB" => 1024,
        "TI" | "TIB" | "T" | "TB" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(factor).filter(|&m| m > 0)
}

/// Why `value` is not a valid Kubernetes label value, if it is not.
fn invalid_label_value(value: &str) -> Option<&'static str> {
    if value.len() > 63 {
        return Some("is longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("may only contain letters, digits, '-', '_' and '.'");
    }
    let b = value.as_bytes();
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// Turns a driver's model name (`NVIDIA A100-SXM4-80GB`) into a label-safe one
/// (`NVIDIA-A100-SXM4-80GB`).
pub fn sanitize_model(name: &str) -> String {
    let mapped: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    for c in mapped.chars() {
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut s: String = trimmed.chars().take(63).collect();
    while s.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.pop();
    }
    if s.is_empty() { "unknown".into() } else { s }
}

/// The devices a list of fake groups declares, indexed from 0 in order, with UUIDs that are
/// stable for a given node name.
pub fn fake_devices(groups: &[FakeGpuGroup], node_name: &str) -> Vec<GpuDevice> {
    let mut devices = Vec::new();
    for group in groups {
        for _ in 0..group.count {
            let index = devices.len() as u32;
            devices.push(GpuDevice {
                index,
                uuid: fake_uuid(node_name, index),
                model: group.model.clone(),
                memory_mib: group.memory_mib,
                healthy: true,
                fake: true,
                nvlink_peers: Vec::new(),
            });
        }
    }
    devices
}

/// A UUID-shaped identifier derived from the node name and index (FNV-1a, 128 bits).
fn fake_uuid(node_name: &str, index: u32) -> String {
    let hash = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in node_name.bytes().chain(index.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(1), hash(2));
    let mut s = String::from("GPU-");
    let _ = write!(
        s,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    );
    s
}

/// Where the agent's GPUs come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuSource {
    /// Ask NVML; no devices (and a log line saying why) when no driver is present.
    #[default]
    Auto,
    /// Declared devices for demos and tests (`--fake-gpus`).
    Fake(Vec<FakeGpuGroup>),
    /// Report no GPUs at all.
    Disabled,
}

/// The node's GPUs and the means to re-check their health.
pub struct GpuInventory {
    devices: Vec<GpuDevice>,
    fake: bool,
    nvml: Option<nvml_wrapper::Nvml>,
    /// Why NVML found nothing, when it did not.
    note: Option<String>,
}

impl std::fmt::Debug for GpuInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuInventory")
            .field("devices", &self.devices)
            .field("fake", &self.fake)
            .field("nvml", &self.nvml.is_some())
            .finish()
    }
}

impl GpuInventory {
    /// Finds the devices `source` describes. Never fails: without a driver the inventory is
    /// empty and [`GpuInventory::note`] says why.
    pub fn discover(source: &GpuSource, node_name: &str) -> Self {
        match source {
            GpuSource::Disabled => GpuInventory {
                devices: Vec::new(),
                fake: false,
                nvml: None,
                note: Some("GPU discovery is disabled".into()),
            },
            GpuSource::Fake(groups) => GpuInventory {
                devices: fake_devices(groups, node_name),
                fake: true,
                nvml: None,
                note: None,
            },
            GpuSource::Auto => match nvml::discover() {
                Ok((nvml, devices)) => GpuInventory {
                    devices,
                    fake: false,
                    nvml: Some(nvml),
                    note: None,
                },
                Err(reason) => GpuInventory {
                    devices: Vec::new(),
                    fake: false,
                    nvml: None,
                    note: Some(reason),
                },
            },
        }
    }

    /// An inventory of exactly these devices (for tests and embedders).
    pub fn from_devices(devices: Vec<GpuDevice>) -> Self {
        let fake = !devices.is_empty() && devices.iter().all(|d| d.fake);
        GpuInventory {
            devices,
            fake,
            nvml: None,
            note: None,
        }
    }

    /// All devices, healthy or not, ordered by index.
    pub fn devices(&self) -> &[GpuDevice] {
        &self.devices
    }

    /// True when the devices were declared rather than discovered.
    pub fn is_fake(&self) -> bool {
        self.fake
    }

    /// Why discovery found no devices, when it found none.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Number of devices that may be allocated.
    pub fn healthy_count(&self) -> usize {
        self.devices.iter().filter(|d| d.healthy).count()
    }

    /// Re-checks the health of discovered devices; returns true when something changed.
    pub fn refresh_health(&mut self) -> bool {
        let Some(nvml) = &self.nvml else {
            return false;
        };
        let mut changed = false;
        for d in &mut self.devices {
            let healthy = nvml::device_healthy(nvml, d.index, &d.uuid);
            if healthy != d.healthy {
                tracing::warn!(index = d.index, uuid = %d.uuid, healthy, "GPU health changed");
                d.healthy = healthy;
                changed = true;
            }
        }
        changed
    }
}

/// NVML access, kept apart so that everything else is testable without a driver.
mod nvml {
    use std::collections::HashMap;

    use ferry_api::gpu::GpuDevice;
    use nvml_wrapper::Nvml;
    use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError};
    use nvml_wrapper::error::NvmlError;

    use super::sanitize_model;

    /// NVLink links per device that NVML can describe.
    const MAX_LINKS: u32 = 18;

    /// Loads NVML and lists the devices, or says why it cannot.
    pub(super) fn discover() -> Result<(Nvml, Vec<GpuDevice>), String> {
        let nvml = Nvml::init().map_err(|e| match e {
            NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
                "no NVIDIA driver: libnvidia-ml.so.1 could not be loaded".to_string()
            }
            NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
            other => format!("NVML failed to initialise: {other}"),
        })?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML could not count devices: {e}"))?;
        let mut devices = Vec::new();
        let mut bus_to_index = HashMap::new();
        for index in 0..count {
            match describe(&nvml, index) {
                Ok((device, bus_id)) => {
                    bus_to_index.insert(normalize_bus_id(&bus_id), index);
                    devices.push(device);
                }
                Err(e) => {
                    tracing::warn!(index, error = %e, "GPU does not answer NVML queries; marking it unhealthy");
                    devices.push(GpuDevice {
                        index,
                        uuid: format!("GPU-unavailable-{index}"),
                        model: "unknown".into(),
                        memory_mib: 0,
                        healthy: false,
                        fake: false,
                        nvlink_peers: Vec::new(),
                    });
                }
            }
        }
        for device in devices.iter_mut().filter(|d| d.healthy) {
            device.nvlink_peers = nvlink_peers(&nvml, device.index, &bus_to_index);
        }
        Ok((nvml, devices))
    }

    fn describe(nvml: &Nvml, index: u32) -> Result<(GpuDevice, String), NvmlError> {
        let dev = nvml.device_by_index(index)?;
        let uuid = dev.uuid()?;
        let model = sanitize_model(&dev.name()?);
        let memory_mib = dev.memory_info()?.total / (1024 * 1024);
        let bus_id = dev.pci_info()?.bus_id;
        let healthy = device_healthy(nvml, index, &uuid);
        Ok((
            GpuDevice {
                index,
                uuid,
                model,
                memory_mib,
                healthy,
                fake: false,
                nvlink_peers: Vec::new(),
            },
            bus_id,
        ))
    }

    /// A device is healthy when it still answers queries under its UUID and reports no
    /// uncorrected (volatile) ECC errors.
    pub(super) fn device_healthy(nvml: &Nvml, index: u32, uuid: &str) -> bool {
        let Ok(dev) = nvml.device_by_index(index) else {
            return false;
        };
        match dev.uuid() {
            Ok(u) if u == uuid => {}
            _ => return false,
        }
        if dev.memory_info().is_err() {
            return false;
        }
        // Devices without ECC answer NotSupported: that is not a fault.
        !matches!(
            dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
            Ok(n) if n > 0
        )
    }

    fn nvlink_peers(nvml: &Nvml, index: u32, bus_to_index: &HashMap<String, u32>) -> Vec<u32> {
        let Ok(dev) = nvml.device_by_index(index) else {
            return Vec::new();
        };
        let mut peers = Vec::new();
        for link in 0..MAX_LINKS {
            let link = dev.link_wrapper_for(link);
            // The first error (NotSupported, InvalidArg past the last link) ends the scan.
            match link.is_active() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => break,
            }
            if let Ok(remote) = link.remote_pci_info()
                && let Some(&peer) = bus_to_index.get(&normalize_bus_id(&remote.bus_id))
                && peer != index
                && !peers.contains(&peer)
            {
                peers.push(peer);
            }
        }
        peers.sort_unstable();
        peers
    }

    /// PCI bus ids come as `00000000:3B:00.0` or `0000:3b:00.0`; compare them case- and
    /// width-insensitively.
    fn normalize_bus_id(id: &str) -> String {
        let id = id.trim().to_ascii_lowercase();
        match id.split_once(':') {
            Some((domain, rest)) => {
                let domain = domain.trim_start_matches('0');
                format!("{domain}:{rest}")
            }
            None => id,
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn bus_ids_compare_loosely() {
            assert_eq!(
                super::normalize_bus_id("00000000:3B:00.0"),
                super::normalize_bus_id("0000:3b:00.0")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_with_counts_and_memory() {
        let g = parse_fake_gpus("4xA100-80GB, 2xT4,H100,3XFoo:16Gi,1xBar:512").unwrap();
        assert_eq!(
            g,
            vec![
                FakeGpuGroup {
                    count: 4,
                    model: "A100-80GB".into(),
                    memory_mib: 81920
                },
                FakeGpuGroup {
                    count: 2,
                    model: "T4".into(),
                    memory_mib: 15360
                },
                FakeGpuGroup {
                    count: 1,
                    model: "H100".into(),
                    memory_mib: 81559
                },
                FakeGpuGroup {
                    count: 3,
                    model: "Foo".into(),
                    memory_mib: 16384
                },
                FakeGpuGroup {
                    count: 1,
                    model: "Bar".into(),
                    memory_mib: 512
                },
            ]
        );
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        let cases = [
            ("", "empty"),
            ("  ", "empty"),
            ("8x", "no model"),
            ("8", "count but no model"),
            ("0xA100", "zero devices"),
            ("4xA100,,2xT4", "empty"),
            ("2xMystery", "memory of model \"Mystery\" is unknown"),
            ("2xA100:lots", "not a positive size"),
            ("2xA100:0", "not a positive size"),
            ("2xA 100", "may only contain"),
            ("2x-A100", "start and end"),
            ("99999999999xA100", "too large"),
            ("1000xA100,100xT4", "more than 1024"),
        ];
        for (spec, want) in cases {
            let err = parse_fake_gpus(spec).expect_err(spec);
            assert!(
                err.to_string().contains(want),
                "{spec:?}: {err} should mention {want:?}"
            );
        }
    }

    #[test]
    fn memory_from_names() {
        assert_eq!(known_memory_mib("NVIDIA-H100-80GB-HBM3"), Some(81920));
        assert_eq!(known_memory_mib("a100"), Some(40960));
        assert_eq!(known_memory_mib("Tesla-T4"), Some(15360));
        assert_eq!(known_memory_mib("Unknown-Thing"), None);
    }

    #[test]
    fn fake_devices_are_indexed_and_stable() {
        let groups = parse_fake_gpus("2xA100-80GB,1xT4").unwrap();
        let a = fake_devices(&groups, "node-a");
        assert_eq!(a.len(), 3);
        assert_eq!(a.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(a[2].model, "T4");
        assert!(a.iter().all(|d| d.fake && d.healthy));
        assert_eq!(a, fake_devices(&groups, "node-a"), "UUIDs must be stable");
        let b = fake_devices(&groups, "node-b");
        assert_ne!(a[0].uuid, b[0].uuid);
        assert_ne!(a[0].uuid, a[1].uuid);
        assert!(
            a[0].uuid.starts_with("GPU-") && a[0].uuid.len() == 40,
            "{}",
            a[0].uuid
        );
    }

    #[test]
    fn sanitizes_driver_model_names() {
        assert_eq!(
            sanitize_model("NVIDIA A100-SXM4-80GB"),
            "NVIDIA-A100-SXM4-80GB"
        );
        assert_eq!(sanitize_model("  Tesla V100 (PCIe) "), "Tesla-V100-PCIe");
        assert_eq!(sanitize_model("???"), "unknown");
        assert!(invalid_label_value(&sanitize_model(&"x".repeat(100))).is_none());
    }

    /// Exercises the NVML path on whatever machine runs the tests: without a driver it must
    /// report why; with one, every device must carry a UUID and memory.
    #[test]
    fn nvml_discovery_skips_cleanly_or_finds_devices() {
        let inv = GpuInventory::discover(&GpuSource::Auto, "n");
        if inv.devices().is_empty() {
            let note = inv.note().unwrap_or("no devices");
            println!("skipping NVML device checks: {note}");
            assert!(!inv.is_fake());
        } else {
            for d in inv.devices() {
                assert!(!d.fake);
                if d.healthy {
                    assert!(d.uuid.starts_with("GPU-"), "{d:?}");
                    assert!(d.memory_mib > 0, "{d:?}");
                }
            }
        }
    }
}

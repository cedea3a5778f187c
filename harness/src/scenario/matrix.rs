//! `lulab run --matrix KEY=V1,V2 …`: one scenario across machine shapes.
//! Each axis names a `[host]` field; the cells are every combination, each
//! a copy of the scenario with those values, checked as a file would be (a
//! shape the scenario cannot run on is a cell that says why, not a run).
//! `memory_mib` takes `MIB` or `MIB@BASE`: the RAM and, with `@`, the
//! carve-out moved to `[pkernfs].base_mib = BASE` (`4096@4352`: 4 GiB of
//! RAM with the carve-out above 4 GiB).
//!
//! A matrix file (`scenarios/matrix/*.toml`, [`MatrixFile`]) names a
//! scenario of the catalogue and its axes; each is a test of the long tier.

use super::Scenario;

/// The `[host]` fields an axis may vary.
pub const KEYS: &[&str] = &["cpus", "iommu_mode", "caching_mode", "memory_mib", "tcg_threads"];

/// One axis: a `[host]` field and its values, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    /// The field.
    pub key: String,
    /// Its values.
    pub values: Vec<String>,
}

impl std::str::FromStr for Axis {
    type Err = String;

    /// `KEY=V1,V2,…`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, values) = s.split_once('=').ok_or_else(|| format!("--matrix {s}: expected KEY=V1,V2 (KEY one of {})", KEYS.join(", ")))?;
        let key = key.trim();
        if !KEYS.contains(&key) {
            return Err(format!("--matrix {s}: {key} is not one of {}", KEYS.join(", ")));
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return Err(format!("--matrix {s}: no values"));
        }
        Ok(Self { key: key.into(), values })
    }
}

/// One combination of the axes' values.
#[derive(Debug, Clone)]
pub struct Cell {
    /// `cpus=4,caching_mode=true`.
    pub label: String,
    /// The scenario with those values, or why it cannot run on that shape.
    pub scenario: Result<Scenario, String>,
}

impl Cell {
    /// Its run directory's name: the label with `+` for `,` (QEMU's option
    /// separator, which no path on its command line may hold).
    pub fn dir_name(&self) -> String {
        self.label.replace(',', "+")
    }
}

/// Sets `[host].key` of `sc` to `value`.
fn set(sc: &mut Scenario, key: &str, value: &str) -> Result<(), String> {
    let bad = |what: &str| format!("{key} = {value}: {what}");
    match key {
        "cpus" => sc.host.cpus = value.parse().map_err(|_| bad("not a number"))?,
        "memory_mib" => {
            let (mib, base) = match value.split_once('@') {
                Some((m, b)) => (m, Some(b.parse::<u64>().map_err(|_| bad("the carve-out base after @ is not a number"))?)),
                None => (value, None),
            };
            sc.host.memory_mib = mib.parse().map_err(|_| bad("not a number (MIB or MIB@CARVE_OUT_BASE_MIB)"))?;
            if let Some(base) = base {
                sc.pkernfs.as_mut().ok_or_else(|| bad("@ moves the carve-out, but the scenario has no [pkernfs] table"))?.base_mib = base;
            }
        }
        "caching_mode" => sc.host.caching_mode = value.parse().map_err(|_| bad("not true or false"))?,
        "iommu_mode" => sc.host.iommu_mode = named(value).ok_or_else(|| bad("not legacy or scalable"))?,
        "tcg_threads" => sc.host.tcg_threads = named(value).ok_or_else(|| bad("not multi or single"))?,
        _ => return Err(bad("not a matrix key")),
    }
    Ok(())
}

/// A `[host]` enum value by the name a scenario file gives it.
fn named<T: serde::de::DeserializeOwned>(value: &str) -> Option<T> {
    use serde::de::{value::Error, IntoDeserializer};
    T::deserialize(IntoDeserializer::<Error>::into_deserializer(value)).ok()
}

/// Every combination of `axes` over `sc`, the first axis varying slowest.
pub fn cells(sc: &Scenario, axes: &[Axis]) -> Vec<Cell> {
    let mut combos: Vec<Vec<(&str, &str)>> = vec![Vec::new()];
    for axis in axes {
        combos = combos.into_iter().flat_map(|c| axis.values.iter().map(move |v| [c.clone(), vec![(axis.key.as_str(), v.as_str())]].concat())).collect();
    }
    combos
        .into_iter()
        .map(|combo| {
            let label = combo.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let mut cell = sc.clone();
            let scenario = combo.iter().try_for_each(|(k, v)| set(&mut cell, k, v)).and_then(|()| cell.validate()).map(|()| cell);
            Cell { label, scenario }
        })
        .collect()
}

/// A matrix file: a scenario of `scenarios/` on every combination of its
/// axes (an axis left out keeps the scenario's own value).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixFile {
    /// One line for `lulab list`.
    pub description: String,
    /// The scenario's file stem in `scenarios/` (its checks apply to every cell).
    pub scenario: String,
    /// Its trial's tier (`long`, the default, or `nightly`).
    #[serde(default = "long")]
    pub tier: super::Tier,
    /// `[host].cpus` values.
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// `[host].iommu_mode` values (`legacy`, `scalable`).
    #[serde(default)]
    pub iommu_mode: Vec<String>,
    /// `[host].caching_mode` values.
    #[serde(default)]
    pub caching_mode: Vec<bool>,
    /// `[host].memory_mib` values: `2048`, or `"4096@4352"` to move the carve-out too.
    #[serde(default)]
    pub memory_mib: Vec<MemoryValue>,
    /// `[host].tcg_threads` values (`multi`, `single`).
    #[serde(default)]
    pub tcg_threads: Vec<String>,
}

/// A `memory_mib` value of a matrix file: a number or `"MIB@BASE"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum MemoryValue {
    /// MiB of RAM.
    Mib(u64),
    /// `MIB@BASE`.
    WithBase(String),
}

fn long() -> super::Tier {
    super::Tier::Long
}

impl MatrixFile {
    /// Reads `path`; an error names the file, line and field.
    pub fn load(path: &std::path::Path) -> Result<Self, super::ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| super::ScenarioError::Read { path: origin.clone(), source })?;
        // Typed fields: an unknown key or a value of the wrong type is
        // toml's error (line and field); a bad value is its cell's error.
        toml::from_str(&text).map_err(|e| super::ScenarioError::Parse { path: origin, message: e.to_string().trim_end().to_string() })
    }

    /// Its axes, in the order `cpus`, `iommu_mode`, `caching_mode`,
    /// `memory_mib`, `tcg_threads` (empty ones left out).
    pub fn axes(&self) -> Vec<Axis> {
        let memory = self.memory_mib.iter().map(|v| match v {
            MemoryValue::Mib(m) => m.to_string(),
            MemoryValue::WithBase(s) => s.clone(),
        });
        [
            ("cpus", self.cpus.iter().map(u32::to_string).collect::<Vec<_>>()),
            ("iommu_mode", self.iommu_mode.clone()),
            ("caching_mode", self.caching_mode.iter().map(bool::to_string).collect()),
            ("memory_mib", memory.collect()),
            ("tcg_threads", self.tcg_threads.clone()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, values)| Axis { key: k.into(), values })
        .collect()
    }
}

impl std::fmt::Display for Axis {
    /// `KEY=V1,V2`, as `--matrix` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.values.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{IommuMode, TcgThreads};

    const SC: &str = "description = \"m\"\nexpect = \"intact\"\n\n[host]\nkernel = \"lulab\"\n\n[pkernfs]\nsize_mib = 64\nbase_mib = 512\n\n\
[rx]\nring_size = 256\nrate_fps = 100.0\nframe_size = 128\nframes = 100\npersist = true\n\n[[steps]]\ndo = \"boot\"\n\n[[steps]]\ndo = \"start_dma\"\n";

    #[test]
    fn axes_parse_and_bad_ones_say_why() {
        assert_eq!("cpus=1,4".parse::<Axis>().unwrap(), Axis { key: "cpus".into(), values: vec!["1".into(), "4".into()] });
        assert!("smp=2".parse::<Axis>().unwrap_err().contains("not one of cpus"));
        assert!("cpus".parse::<Axis>().unwrap_err().contains("KEY=V1,V2"));
        assert!("cpus=".parse::<Axis>().unwrap_err().contains("no values"));
    }

    #[test]
    fn cells_are_every_combination_and_an_impossible_one_says_why() {
        let sc = Scenario::parse(SC, "m.toml").unwrap();
        let axes: Vec<Axis> = ["cpus=1,4", "iommu_mode=legacy,scalable", "caching_mode=false,true"].iter().map(|a| a.parse().unwrap()).collect();
        let cells = cells(&sc, &axes);
        assert_eq!(cells.len(), 8);
        assert_eq!(cells[0].label, "cpus=1,iommu_mode=legacy,caching_mode=false");
        assert_eq!(cells[7].label, "cpus=4,iommu_mode=scalable,caching_mode=true");
        assert_eq!(cells[7].dir_name(), "cpus=4+iommu_mode=scalable+caching_mode=true", "no ',' on QEMU's command line");
        let c = cells[5].scenario.as_ref().unwrap();
        assert_eq!((c.host.cpus, c.host.iommu_mode, c.host.caching_mode), (4, IommuMode::Legacy, true));
        assert!(cells.iter().all(|c| c.scenario.is_ok()), "persistence runs in both VT-d modes");
        let mem = super::cells(&sc, &["memory_mib=2048,4096@4352,4096@x".parse().unwrap()]);
        let m0 = mem[0].scenario.as_ref().unwrap();
        assert_eq!((m0.host.memory_mib, m0.pkernfs.as_ref().unwrap().base_mib), (2048, 512), "no @: the carve-out stays");
        let m1 = mem[1].scenario.as_ref().unwrap();
        assert_eq!((m1.host.memory_mib, m1.pkernfs.as_ref().unwrap().base_mib), (4096, 4352));
        assert!(mem[2].scenario.as_ref().unwrap_err().contains("base after @ is not a number"));
        let threads = super::cells(&sc, &["tcg_threads=single,many".parse().unwrap()]);
        assert_eq!(threads[0].scenario.as_ref().unwrap().host.tcg_threads, TcgThreads::Single);
        assert!(threads[1].scenario.as_ref().unwrap_err().contains("tcg_threads = many: not multi or single"));
        let modes = super::cells(&sc, &["iommu_mode=scalable,Scalable".parse().unwrap()]);
        assert_eq!(modes[0].scenario.as_ref().unwrap().host.iommu_mode, IommuMode::Scalable);
        assert!(modes[1].scenario.as_ref().unwrap_err().contains("iommu_mode = Scalable: not legacy or scalable"), "the names of scenario files only");
        let bad = super::cells(&sc, &["cpus=0,x".parse().unwrap()]);
        assert!(bad[0].scenario.as_ref().unwrap_err().contains("host.cpus: 0"));
        assert!(bad[1].scenario.as_ref().unwrap_err().contains("cpus = x: not a number"));
    }

    #[test]
    fn matrix_files_give_their_axes_and_bad_ones_name_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("m.toml");
        std::fs::write(&good, "description = \"d\"\nscenario = \"live-update-rx\"\ncpus = [1, 4]\ncaching_mode = [false, true]\nmemory_mib = [2048, \"4096@4352\"]\n").unwrap();
        let m = MatrixFile::load(&good).unwrap();
        let axes: Vec<String> = m.axes().iter().map(Axis::to_string).collect();
        assert_eq!(axes, ["cpus=1,4", "caching_mode=false,true", "memory_mib=2048,4096@4352"]);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "description = \"d\"\nscenario = \"x\"\nsmp = [2]\n").unwrap();
        let e = MatrixFile::load(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("smp") && e.contains("line 3"), "{e}");
    }
}

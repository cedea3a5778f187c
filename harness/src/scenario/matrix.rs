//! `lulab run --matrix KEY=V1,V2 …`: one scenario across machine shapes.
//! Each axis names a `[host]` field; the cells are every combination, each
//! a copy of the scenario with those values, checked as a file would be (a
//! shape the scenario cannot run on is a cell that says why, not a run).

use super::{IommuMode, Scenario};

/// The `[host]` fields an axis may vary.
pub const KEYS: &[&str] = &["cpus", "iommu_mode", "caching_mode", "memory_mib"];

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
        "memory_mib" => sc.host.memory_mib = value.parse().map_err(|_| bad("not a number"))?,
        "caching_mode" => sc.host.caching_mode = value.parse().map_err(|_| bad("not true or false"))?,
        "iommu_mode" => {
            sc.host.iommu_mode = match value {
                "legacy" => IommuMode::Legacy,
                "scalable" => IommuMode::Scalable,
                _ => return Err(bad("not legacy or scalable")),
            }
        }
        _ => return Err(bad("not a matrix key")),
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let refused = cells.iter().filter(|c| c.scenario.is_err()).count();
        assert_eq!(refused, 4, "persistence in scalable mode is refused in every scalable cell");
        assert!(cells[2].scenario.as_ref().unwrap_err().contains("legacy-mode tables only"));
        let bad = super::cells(&sc, &["cpus=0,x".parse().unwrap()]);
        assert!(bad[0].scenario.as_ref().unwrap_err().contains("host.cpus: 0"));
        assert!(bad[1].scenario.as_ref().unwrap_err().contains("cpus = x: not a number"));
    }
}

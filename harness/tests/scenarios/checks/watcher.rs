//! The CPU-write watcher (`watch_persistent_memory`): the headline
//! scenarios run with it and must show no CPU store outside what each phase
//! allows; its negative control must be named by address, phase and code.

use std::path::Path;

use lulab::report::Report;

/// The watcher's section of a report.
fn section(r: &Report) -> &serde_json::Value {
    let s = r.sections.get("cpu_writes").expect("a cpu_writes section (watch_persistent_memory)");
    assert!(!s.is_null(), "the watcher ran");
    s
}

/// A watched run with nothing outside what its phases allow: the plugin
/// saw stores (the agent's, the kernels'), all allowed.
pub fn clean(r: &Report, dir: &Path) {
    let s = section(r);
    assert_eq!(r.memory.cpu_writes_outside_allowed, Some(0), "offenders: {}", s["offenders"]);
    assert!(s["stores"].as_u64().unwrap_or(0) > 0 && s["allowed"] == s["stores"], "{s}");
    assert!(s["by_phase"]["agent"].as_u64().unwrap_or(0) > 0, "the agent's own stores were seen: {s}");
    assert!(s.get("pages_unreadable").is_none(), "pkernfs was read for page owners: {s}");
    assert!(dir.join("host/watch.log").is_file());
}

/// `plugin-catches-write`: the new kernel's `lulab_scribble=0x43f00000`.
pub fn catches_write(r: &Report, _: &Path) {
    let s = section(r);
    let offenders = s["offenders"].as_array().expect("offenders");
    assert_eq!(r.memory.cpu_writes_outside_allowed, Some(1), "exactly the one scribble: {offenders:?}");
    let o = &offenders[0];
    assert_eq!(o["paddr"], "0x43f00000", "{o}");
    assert_eq!((o["phase"].as_str(), o["kernel"].as_u64(), o["size"].as_u64()), (Some("new_kernel_before_agent"), Some(1), Some(8)), "{o}");
    assert!(o["symbol"].as_str().is_some_and(|s| s.starts_with("lu_scribble+")), "named from System.map: {o}");
    assert_eq!(o["page"], "no file", "{o}");
    // Nothing else saw it: no frame lost, no agent page changed.
    assert_eq!((r.dma.lost, r.memory.unexpected_changes), (0, 0), "{:?} {:?}", r.dma, r.memory);
}

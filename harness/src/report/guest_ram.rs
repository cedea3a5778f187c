//! `guest_ram` in report.json: the VM's guest RAM of a `[guest_ram]`
//! scenario, how it was kept through each live update and whether it all
//! came back (null for every other scenario).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::scenario::GuestRamKeep;

/// `guest_ram`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRamSection {
    /// Bytes.
    pub size: u64,
    /// How it was kept: `pkernfs`, `copy` or `none`.
    pub keep: GuestRamKeep,
    /// The file in the host.
    pub path: String,
    /// Milliseconds the agent took to write it (`fill_guest_ram`).
    pub fill_ms: Option<u64>,
    /// One per live update after `fill_guest_ram`, in order.
    pub updates: Vec<GuestRamUpdate>,
}

/// The guest RAM through one live update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRamUpdate {
    /// 1 for the first live update.
    pub live_update: u32,
    /// `keep = "copy"`: saving it to the save disk before the kexec (ms;
    /// part of the update's shutdown).
    pub save_ms: Option<u64>,
    /// `keep = "copy"`: restoring it after the kexec (ms; part of re-adopt).
    pub restore_ms: Option<u64>,
    /// The agent hashed it after the update and it equals what was written.
    pub intact_inside: bool,
    /// `keep = "pkernfs"`: the harness found the file in the carve-out of
    /// the RAM file with what was written (null for tmpfs, which the
    /// harness cannot read from outside).
    pub intact_outside: Option<bool>,
}

/// report.md's lines for it.
pub(super) fn render(s: &mut String, g: &GuestRamSection) {
    let keep = crate::wire_name(&g.keep);
    let _ = writeln!(s, "## Guest RAM\n\n{} MiB kept by `{keep}` at `{}`\n", g.size >> 20, g.path);
    if g.updates.is_empty() {
        return;
    }
    let _ = writeln!(s, "| update | save (ms) | restore (ms) | inside | outside |\n|---|---|---|---|---|");
    let ms = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
    let ok = |b: bool| if b { "intact" } else { "**changed**" };
    for u in &g.updates {
        let outside = u.intact_outside.map_or("–", ok);
        let _ = writeln!(s, "| {} | {} | {} | {} | {} |", u.live_update, ms(u.save_ms), ms(u.restore_ms), ok(u.intact_inside), outside);
    }
    s.push('\n');
}

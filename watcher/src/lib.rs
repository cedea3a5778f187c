//! `lulab-watcher`: a QEMU TCG plugin that records every guest CPU store into
//! watched guest-physical ranges (the pkernfs carve-out), so that the harness
//! can name who wrote into persistent memory during a live update.
//!
//! Arguments (`-plugin file=liblulab_watcher.so,ranges=F,out=F,max=N`):
//! - `ranges`: the ranges file ([`lulab_proto::watch::Ranges`]);
//! - `out`: the record file ([`lulab_proto::watch::Record`] lines and a
//!   closing [`lulab_proto::watch::Trailer`]);
//! - `max`: at most this many records (default 500000); later stores are
//!   only counted, so a runaway writer cannot fill the disk;
//! - `base`: subtracted from the host's CLOCK_MONOTONIC (ns) in every
//!   record, so that the records carry the harness's clock.
//!
//! What it does with each store is [`lulab_proto::watch::Recorder`].

use std::fs::File;
use std::io::BufWriter;
use std::sync::{Mutex, OnceLock};

use lulab_proto::watch::{monotonic_ns, Ranges, Recorder};
use qemu_plugin::install::{Args, Info, Value};
use qemu_plugin::plugin::{HasCallbacks, Register};
use qemu_plugin::{register, CallbackFlags, MemRW, PluginId, TranslationBlock};

/// Default record limit.
const DEFAULT_MAX: u64 = 500_000;

struct Watch {
    ranges: Ranges,
    base: u64,
    out: Mutex<Recorder<BufWriter<File>>>,
}

static WATCH: OnceLock<Watch> = OnceLock::new();

fn arg<'a>(args: &'a Args, key: &str) -> Option<&'a Value> {
    args.parsed.get(key)
}

fn string_arg(args: &Args, key: &str) -> Result<String, String> {
    match arg(args, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!("lulab-watcher: {key}={v:?} is not a path")),
        None => Err(format!("lulab-watcher: missing argument {key}=")),
    }
}

#[derive(Default)]
struct Watcher;

impl Register for Watcher {
    fn register(&mut self, id: PluginId, args: &Args, _info: &Info) -> qemu_plugin::Result<()> {
        let fail = |m: String| qemu_plugin::Error::from(anyhow_like(m));
        let ranges_path = string_arg(args, "ranges").map_err(fail)?;
        let out_path = string_arg(args, "out").map_err(fail)?;
        let max = match arg(args, "max") {
            Some(Value::Integer(n)) if *n > 0 => *n as u64,
            None => DEFAULT_MAX,
            Some(v) => return Err(fail(format!("lulab-watcher: max={v:?} is not a positive number"))),
        };
        let base = match arg(args, "base") {
            Some(Value::Integer(n)) if *n >= 0 => *n as u64,
            None => 0,
            Some(v) => return Err(fail(format!("lulab-watcher: base={v:?} is not a clock value in ns"))),
        };
        let text = std::fs::read_to_string(&ranges_path).map_err(|e| fail(format!("lulab-watcher: {ranges_path}: {e}")))?;
        let ranges = Ranges::parse(&text).map_err(|e| fail(format!("lulab-watcher: {ranges_path}: {e}")))?;
        let file = File::create(&out_path).map_err(|e| fail(format!("lulab-watcher: {out_path}: {e}")))?;
        let out = Recorder::new(BufWriter::with_capacity(1 << 16, file), max);
        if WATCH.set(Watch { ranges, base, out: Mutex::new(out) }).is_err() {
            return Err(fail("lulab-watcher: loaded twice".into()));
        }
        qemu_plugin::qemu_plugin_register_atexit_cb(id, |_| {
            if let Some(w) = WATCH.get() {
                w.out.lock().unwrap_or_else(|e| e.into_inner()).close();
            }
        })?;
        Ok(())
    }
}

/// The crate's error type takes any std error; a message is one.
fn anyhow_like(m: String) -> std::io::Error {
    std::io::Error::other(m)
}

impl HasCallbacks for Watcher {
    fn on_translation_block_translate(&mut self, _id: PluginId, tb: TranslationBlock) -> qemu_plugin::Result<()> {
        for insn in tb.instructions() {
            let pc = insn.vaddr();
            insn.register_memory_access_callback_flags(
                move |vcpu, info, vaddr| {
                    let Some(w) = WATCH.get() else { return };
                    let Some(hw) = info.hwaddr(vaddr) else { return };
                    if hw.is_io() {
                        return;
                    }
                    let paddr = hw.hwaddr();
                    let size = 1u32 << info.size_shift();
                    if !w.ranges.hits(paddr, u64::from(size)) {
                        return;
                    }
                    let ns = monotonic_ns().saturating_sub(w.base);
                    w.out.lock().unwrap_or_else(|e| e.into_inner()).store(ns, vcpu, pc, vaddr, paddr, size);
                },
                MemRW::QEMU_PLUGIN_MEM_W,
                CallbackFlags::QEMU_PLUGIN_CB_NO_REGS,
            );
        }
        Ok(())
    }
}

register!(Watcher);

//! The prompt of `lulab replay`: a [`StepHook`] reading commands with
//! rustyline (line editing, history kept in the cache directory).

use std::time::Duration;

use anyhow::{Context, Result};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use serde_json::Value;

use super::{parse, Command, Stops, HELP};
use crate::scenario::plan::Planned;
use crate::scenario::run::{Control, Point, RunView, StepHook};

/// How many delivered frames `ledger` lists.
const LAST_FRAMES: usize = 5;
/// How long a QMP command or an agent request typed at the prompt may take.
const REPLY_WITHIN: Duration = Duration::from_secs(60);

/// The prompt.
pub struct Repl {
    editor: DefaultEditor,
    stops: Stops,
    /// Step kinds (`do` names) of the whole plan, to warn about a breakpoint that can never stop.
    kinds: Vec<&'static str>,
    total: usize,
}

impl std::fmt::Debug for Repl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repl").field("stops", &self.stops).finish_non_exhaustive()
    }
}

impl Repl {
    /// A prompt for a run of `plan`'s steps.
    pub fn new(plan: &[Planned]) -> Result<Self> {
        let mut editor = DefaultEditor::new().context("starting the line editor")?;
        let _ = editor.load_history(&history_file()); // none yet on a first replay
        let mut kinds: Vec<&'static str> = Vec::new();
        for name in plan.iter().map(|p| p.step.name()) {
            if !kinds.contains(&name) {
                kinds.push(name);
            }
        }
        Ok(Self { editor, stops: Stops::default(), kinds, total: plan.len() })
    }

    fn show(&self, step: &Planned, next: Option<&Planned>) {
        println!("\nstep {}/{}: {}    [before it: {}]", step.index + 1, self.total, describe(step), step.before.describe());
        match next {
            Some(n) => println!("next {}/{}: {}", n.index + 1, self.total, describe(n)),
            None => println!("next: judging (the oracles, the report)"),
        }
    }

    /// Reads commands until one lets the run go on.
    fn prompt(&mut self, run: &mut RunView<'_, '_>) -> Control {
        loop {
            let line = match self.editor.readline("replay> ") {
                Ok(l) => l,
                Err(ReadlineError::Interrupted) => {
                    println!("(`quit` shuts the host down and keeps the run directory)");
                    continue;
                }
                Err(ReadlineError::Eof) => return Control::Quit,
                Err(e) => {
                    eprintln!("reading the terminal: {e}; quitting");
                    return Control::Quit;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let _ = self.editor.add_history_entry(line.as_str());
            let _ = self.editor.save_history(&history_file());
            match parse(&line) {
                Ok(Command::Step) => return Control::Run,
                Ok(Command::Continue) => {
                    self.stops.continuing = true;
                    return Control::Run;
                }
                Ok(Command::Quit) => return Control::Quit,
                Ok(cmd) => {
                    if let Err(e) = self.look(run, cmd) {
                        println!("error: {e:#}");
                    }
                }
                Err(msg) => println!("{msg}"),
            }
        }
    }

    /// The commands that look without running a step.
    fn look(&mut self, run: &mut RunView<'_, '_>, cmd: Command) -> Result<()> {
        match cmd {
            Command::Help => println!("{HELP}"),
            Command::Break(None) if self.stops.breaks.is_empty() => println!("no breakpoints"),
            Command::Break(None) => println!("breakpoints: {}", self.stops.breaks.iter().cloned().collect::<Vec<_>>().join(", ")),
            Command::Break(Some(kind)) => {
                if !self.kinds.contains(&kind.as_str()) {
                    println!("note: this scenario has no `{kind}` step (its steps: {})", self.kinds.join(", "));
                }
                println!("breakpoint before every `{kind}` step");
                self.stops.breaks.insert(kind);
            }
            Command::Console => {
                let host = run.host().context("no host yet: `boot` has not run")?;
                let sock = host.paths.console_sock();
                crate::attach::attach(&mut host.console, &sock.display().to_string())?;
            }
            Command::Qmp { execute, arguments } => {
                let host = run.host().context("no host yet: `boot` has not run")?;
                let reply = host.qmp.execute_raw(&execute, arguments, REPLY_WITHIN)?;
                println!("{}", serde_json::to_string_pretty(&reply)?);
            }
            Command::Agent(op) => {
                let host = run.host().context("no host yet: `boot` has not run")?;
                let reply = host.agent.call(op, REPLY_WITHIN)?;
                println!("{}", serde_json::to_string_pretty(&reply)?);
            }
            Command::Ledger => print_ledger(run)?,
            Command::Timeline => print_timeline(run),
            Command::Step | Command::Continue | Command::Quit => unreachable!("handled by the prompt"),
        }
        Ok(())
    }
}

impl StepHook for Repl {
    fn before(&mut self, run: &mut RunView<'_, '_>, point: Point<'_>) -> Control {
        match point {
            Point::Step { step, next } => {
                if !self.stops.before(&step.step) {
                    println!("step {}/{}: {}", step.index + 1, self.total, describe(step));
                    return Control::Run;
                }
                self.show(step, next);
            }
            Point::End if !self.stops.at_end() => return Control::Run,
            Point::End => println!("\nevery step ran; next: judging (`step`, `continue` or `quit` judge; the host runs until then)"),
            Point::Failed { step, error } => {
                println!("\nstep {}/{} ({}) failed: {error}", step.index + 1, self.total, step.step.name());
                println!("the host is left as it is; next: judging (`step`, `continue` or `quit`)");
            }
        }
        self.prompt(run)
    }
}

/// `live_update` or `await_sent {"frames":400}`: the `do` name and the
/// step's other fields that are set.
fn describe(p: &Planned) -> String {
    let mut v = serde_json::to_value(&p.step).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("do");
        o.retain(|_, v| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)));
        if !o.is_empty() {
            return format!("{} {v}", p.step.name());
        }
    }
    p.step.name().to_string()
}

fn print_ledger(run: &RunView<'_, '_>) -> Result<()> {
    let Some(l) = run.ledger(LAST_FRAMES)? else {
        println!("no ledger yet: no engine started (`start_dma`)");
        return Ok(());
    };
    println!(
        "frames sent {}, delivered {}, corrupted {}, lost so far {} (sent, not seen in the ring yet: in flight or lost; the ledger oracle decides at the end); injector {}",
        l.sent,
        l.delivered,
        l.corrupted,
        l.not_seen,
        if l.injector_done { "done" } else { "running" }
    );
    if l.last.is_empty() {
        println!("no frame delivered yet");
    }
    for (seq, slot, us) in &l.last {
        println!("  frame {seq}: ring slot {slot}, {us} µs from send to seen");
    }
    if let Some((read, expected)) = l.nvme {
        println!("NVMe blocks read {read} of {expected}");
    }
    Ok(())
}

fn print_timeline(run: &RunView<'_, '_>) {
    let journal = run.journal();
    if journal.is_empty() {
        println!("nothing in the journal yet");
    }
    for e in journal {
        println!("{:>8} ms  {}", e.ms, event_line(&e.event));
    }
    for (i, u) in run.updates().iter().enumerate() {
        let at = |ns: Option<u64>| match ns {
            Some(ns) => format!("+{} ms", ns.saturating_sub(u.kexec_started_ns) / 1_000_000),
            None => "-".into(),
        };
        println!(
            "update {} → {}: agent down {}, kernel up {} (from {:?}), agent up {}",
            i + 1,
            u.kernel,
            at(u.agent_down_ns),
            at(u.kernel_up_ns),
            u.kernel_up_from,
            at(u.agent_up_ns)
        );
    }
}

/// `step index=3 name=live_update`: the event's name and its fields.
fn event_line(e: &crate::journal::Event) -> String {
    let v = serde_json::to_value(e).unwrap_or(Value::Null);
    let Some(o) = v.as_object() else { return format!("{e:?}") };
    let name = o.get("event").and_then(Value::as_str).unwrap_or("?");
    let fields: Vec<String> = o.iter().filter(|(k, _)| *k != "event").map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), String::from))).collect();
    format!("{name} {}", fields.join(" "))
}

fn history_file() -> std::path::PathBuf {
    crate::cache::root().join("replay-history")
}

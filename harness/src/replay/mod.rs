//! `lulab replay`: a scenario re-run step by step at a prompt. Before each
//! step of the checked plan the prompt shows it and the next; the person
//! steps, continues to a breakpoint, looks at the host (console, QMP, the
//! agent) and at the run so far (ledger, timeline), or quits (the host is
//! shut down, the run directory kept). When the steps have run, the oracles
//! judge as in `lulab run`.
//!
//! This file holds what can be tested without a host: the command parser,
//! the breakpoints and where the prompt stops. `repl.rs` is the prompt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use lulab_proto::Op;
use serde_json::Value;

use crate::scenario::run::Ended;
use crate::scenario::{Scenario, Step};

mod repl;

pub use repl::Repl;

/// One line typed at the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the step shown.
    Step,
    /// Run to the end, or to the next step a breakpoint names.
    Continue,
    /// Stop before the next step of this kind (`do` name); none: list them.
    Break(Option<String>),
    /// Attach to the host's serial console (Ctrl-] detaches).
    Console,
    /// Send a QMP command and print its reply.
    Qmp {
        /// Its name (`query-status`).
        execute: String,
        /// Its arguments (null: none).
        arguments: Value,
    },
    /// Send the agent a request and print its reply.
    Agent(Op),
    /// Frames sent, delivered and lost so far, and the last few.
    Ledger,
    /// The journal so far and the live updates' milestones.
    Timeline,
    /// Shut the host down and keep the run directory.
    Quit,
    /// The commands.
    Help,
}

/// What `help` prints.
pub const HELP: &str = "\
step, s                 run the step shown
continue, c             run to the end, or to the next step a breakpoint names
break [DO]              stop before every later step of that kind (e.g. `break live_update`); alone: list breakpoints
console                 attach to the host's serial console; Ctrl-] detaches
qmp NAME [ARGS]         send a QMP command, e.g. `qmp query-status`, `qmp set_link {\"name\": \"nic0\", \"up\": false}`
qmp {JSON}              the same as a whole QMP message: `qmp {\"execute\": \"query-status\"}`
agent {JSON}            send the agent a request, e.g. `agent {\"op\": \"dma_status\", \"pci\": \"0000:00:02.0\"}`; `agent ping` for one without fields
ledger                  frames sent, delivered and lost so far, and the last few delivered
timeline                the run's journal so far and each live update's milestones
quit, q                 shut the host down (no verdict) and keep the run directory
help, h, ?              this list";

/// Parses one line typed at the prompt; the error says what is wrong with it.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let bare = |c: Command| if rest.is_empty() { Ok(c) } else { Err(format!("`{word}` takes no argument (got `{rest}`)")) };
    match word {
        "" => Err("type a command (`help` lists them)".into()),
        "step" | "s" => bare(Command::Step),
        "continue" | "c" => bare(Command::Continue),
        "console" => bare(Command::Console),
        "ledger" => bare(Command::Ledger),
        "timeline" => bare(Command::Timeline),
        "quit" | "q" | "exit" => bare(Command::Quit),
        "help" | "h" | "?" => bare(Command::Help),
        "break" | "b" => parse_break(rest),
        "qmp" => parse_qmp(rest),
        "agent" => parse_agent(rest),
        other => Err(format!("unknown command `{other}` (`help` lists them)")),
    }
}

fn parse_break(rest: &str) -> Result<Command, String> {
    if rest.is_empty() {
        return Ok(Command::Break(None));
    }
    let ok = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if !ok {
        return Err(format!("break: `{rest}` is not a step's `do` name (one word such as `live_update`)"));
    }
    Ok(Command::Break(Some(rest.to_string())))
}

fn parse_qmp(rest: &str) -> Result<Command, String> {
    if rest.is_empty() {
        return Err("qmp: which command? e.g. `qmp query-status` or `qmp {\"execute\": \"query-status\"}`".into());
    }
    if rest.starts_with('{') {
        let v: Value = serde_json::from_str(rest).map_err(|e| format!("qmp: not JSON: {e}"))?;
        let execute = v.get("execute").and_then(Value::as_str).ok_or("qmp: the message has no \"execute\": \"NAME\"")?;
        let arguments = v.get("arguments").cloned().unwrap_or(Value::Null);
        if !(arguments.is_null() || arguments.is_object()) {
            return Err("qmp: \"arguments\" must be an object".into());
        }
        return Ok(Command::Qmp { execute: execute.to_string(), arguments });
    }
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("qmp: `{name}` is not a QMP command name"));
    }
    let arguments = match args {
        "" => Value::Null,
        a => match serde_json::from_str::<Value>(a) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Err(format!("qmp {name}: the arguments must be a JSON object, got `{a}`")),
            Err(e) => return Err(format!("qmp {name}: the arguments are not JSON: {e}")),
        },
    };
    Ok(Command::Qmp { execute: name.to_string(), arguments })
}

fn parse_agent(rest: &str) -> Result<Command, String> {
    if rest.is_empty() {
        return Err("agent: which request? e.g. `agent {\"op\": \"kernel_info\"}` or `agent ping`".into());
    }
    let json = if rest.starts_with('{') { rest.to_string() } else { serde_json::json!({ "op": rest }).to_string() };
    serde_json::from_str::<Op>(&json).map(Command::Agent).map_err(|e| format!("agent: not a request: {e}"))
}

/// Where the prompt stops: every step while stepping; after `continue`,
/// only before a step a breakpoint names (which ends the continuing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stops {
    /// `continue` was typed and no breakpoint has been hit since.
    pub continuing: bool,
    /// Step kinds (`do` names) to stop before.
    pub breaks: BTreeSet<String>,
}

impl Stops {
    /// Whether the prompt comes before `step`.
    pub fn before(&mut self, step: &Step) -> bool {
        if !self.continuing {
            return true;
        }
        if self.breaks.contains(step.name()) {
            self.continuing = false;
            return true;
        }
        false
    }

    /// Whether the prompt comes after the last step, before judging.
    pub fn at_end(&self) -> bool {
        !self.continuing
    }
}

/// Replays `scenario` (named `name`) at the prompt with its files in `out`.
pub fn run(name: &str, scenario: &Scenario, out: &Path) -> Result<Ended> {
    let plan = scenario.plan().map_err(|(entry, m)| anyhow!("steps[{entry}].{m}"))?;
    let mut repl = Repl::new(&plan.steps)?;
    crate::scenario::run::run_with(name, scenario, out, &mut repl)
}

/// The scenario file to replay and the name its report takes: a run
/// directory's `scenario.resolved.toml` (named as its report.json says),
/// or a scenario file (named by its stem).
pub fn source(path: &Path) -> Result<(String, PathBuf)> {
    if !path.is_dir() {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into());
        return Ok((name, path.to_path_buf()));
    }
    let file = path.join(crate::scenario::run::RESOLVED);
    if !file.exists() {
        bail!("{} has no {} (is it a run directory? `lulab run` writes one there)", path.display(), crate::scenario::run::RESOLVED);
    }
    let from_report = std::fs::read_to_string(path.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["scenario"].as_str().map(String::from));
    let name = match from_report {
        Some(n) => n,
        None => path.file_name().context("a run directory without a name")?.to_string_lossy().into_owned(),
    };
    Ok((name, file))
}

#[cfg(test)]
mod tests;

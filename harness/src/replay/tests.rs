use serde_json::json;

use super::*;

#[test]
fn every_command_and_its_short_form_parses() {
    for (line, want) in [
        ("step", Command::Step),
        ("s", Command::Step),
        ("  continue  ", Command::Continue),
        ("c", Command::Continue),
        ("console", Command::Console),
        ("ledger", Command::Ledger),
        ("timeline", Command::Timeline),
        ("quit", Command::Quit),
        ("q", Command::Quit),
        ("help", Command::Help),
        ("?", Command::Help),
        ("break", Command::Break(None)),
        ("break live_update", Command::Break(Some("live_update".into()))),
        ("b   await_sent", Command::Break(Some("await_sent".into()))),
    ] {
        assert_eq!(parse(line), Ok(want), "{line:?}");
    }
}

#[test]
fn qmp_takes_a_name_with_arguments_or_a_whole_message() {
    assert_eq!(parse("qmp query-status"), Ok(Command::Qmp { execute: "query-status".into(), arguments: Value::Null }));
    assert_eq!(
        parse(r#"qmp set_link {"name": "nic0", "up": false}"#),
        Ok(Command::Qmp { execute: "set_link".into(), arguments: json!({"name": "nic0", "up": false}) })
    );
    assert_eq!(
        parse(r#"qmp {"execute": "stop"}"#),
        Ok(Command::Qmp { execute: "stop".into(), arguments: Value::Null })
    );
    assert_eq!(
        parse(r#"qmp {"execute": "human-monitor-command", "arguments": {"command-line": "info pci"}}"#),
        Ok(Command::Qmp { execute: "human-monitor-command".into(), arguments: json!({"command-line": "info pci"}) })
    );
}

#[test]
fn agent_takes_a_request_as_json_or_the_name_of_one_without_fields() {
    assert_eq!(parse(r#"agent {"op": "ping"}"#), Ok(Command::Agent(Op::Ping)));
    assert_eq!(parse("agent kernel_info"), Ok(Command::Agent(Op::KernelInfo)));
    assert_eq!(
        parse(r#"agent {"op": "read_file", "path": "/proc/cmdline", "max_bytes": 4096}"#),
        Ok(Command::Agent(Op::ReadFile { path: "/proc/cmdline".into(), max_bytes: 4096 }))
    );
}

#[test]
fn bad_input_says_what_is_wrong() {
    for (line, says) in [
        ("", "type a command"),
        ("   ", "type a command"),
        ("stpe", "unknown command `stpe`"),
        ("step 2", "`step` takes no argument (got `2`)"),
        ("quit now", "`quit` takes no argument"),
        ("ledger all", "`ledger` takes no argument"),
        ("break Live-Update", "`Live-Update` is not a step's `do` name"),
        ("break live_update now", "not a step's `do` name"),
        ("qmp", "qmp: which command?"),
        ("qmp query-status [1]", "the arguments must be a JSON object"),
        ("qmp set_link {name: nic0}", "the arguments are not JSON"),
        ("qmp {\"arguments\": {}}", "no \"execute\""),
        ("qmp {\"execute\": \"x\", \"arguments\": 3}", "\"arguments\" must be an object"),
        ("qmp {oops", "qmp: not JSON"),
        ("qmp query status!", "the arguments are not JSON"),
        ("qmp query;status", "is not a QMP command name"),
        ("agent", "agent: which request?"),
        ("agent {\"op\": \"fly\"}", "agent: not a request: unknown variant `fly`"),
        ("agent {\"op\": \"read_file\"}", "missing field `path`"),
        ("agent exec", "agent: not a request"),
    ] {
        let err = parse(line).expect_err(line);
        assert!(err.contains(says), "{line:?}: {err}");
    }
}

#[test]
fn help_names_every_command() {
    for word in ["step", "continue", "break", "console", "qmp", "agent", "ledger", "timeline", "quit", "help", "Ctrl-]"] {
        assert!(HELP.contains(word), "{word}");
    }
}

fn steps() -> Vec<Step> {
    ["boot", "start_dma", "inject", "live_update", "settle", "live_update"]
        .iter()
        .map(|name| serde_json::from_value(json!({ "do": name })).unwrap())
        .collect()
}

/// Which steps the prompt comes before, given the commands typed at each
/// prompt (`true`: continue, `false`: step).
fn prompts(stops: &mut Stops, typed: &[bool]) -> Vec<&'static str> {
    let mut typed = typed.iter();
    let mut at = Vec::new();
    for s in steps() {
        if stops.before(&s) {
            at.push(s.name());
            stops.continuing = *typed.next().expect("a prompt nobody answered");
        }
    }
    if stops.at_end() {
        at.push("end");
    }
    at
}

#[test]
fn stepping_stops_before_every_step_and_at_the_end() {
    let mut stops = Stops::default();
    assert_eq!(prompts(&mut stops, &[false; 6]), ["boot", "start_dma", "inject", "live_update", "settle", "live_update", "end"]);
}

#[test]
fn continue_runs_to_the_end_without_a_breakpoint() {
    let mut stops = Stops::default();
    assert_eq!(prompts(&mut stops, &[false, true]), ["boot", "start_dma"]);
}

#[test]
fn a_breakpoint_stops_before_each_step_of_its_kind_only() {
    let mut stops = Stops { breaks: ["live_update".to_string()].into(), ..Stops::default() };
    // continue at boot → stops before the first live_update; continue there
    // runs it (no stop at the step shown) and stops at the second; continue to the end.
    assert_eq!(prompts(&mut stops, &[true, true, true]), ["boot", "live_update", "live_update"]);
    let mut stops = Stops { breaks: ["settle".to_string(), "inject".to_string()].into(), ..Stops::default() };
    assert_eq!(prompts(&mut stops, &[true, true, false, true]), ["boot", "inject", "settle", "live_update"], "stepping from a breakpoint stops at the next step");
    let mut stops = Stops { breaks: ["pkernfs_fill".to_string()].into(), ..Stops::default() };
    assert_eq!(prompts(&mut stops, &[true]), ["boot"], "a breakpoint no step matches never stops");
}

#[test]
fn source_is_a_run_directory_or_a_scenario_file() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("short-rx.toml");
    std::fs::write(&file, "").unwrap();
    assert_eq!(source(&file).unwrap(), ("short-rx".to_string(), file.clone()));
    let run = d.path().join("20261206-080000-short-rx");
    std::fs::create_dir(&run).unwrap();
    let err = format!("{:#}", source(&run).unwrap_err());
    assert!(err.contains("has no scenario.resolved.toml"), "{err}");
    std::fs::write(run.join("scenario.resolved.toml"), "").unwrap();
    assert_eq!(source(&run).unwrap(), ("20261206-080000-short-rx".to_string(), run.join("scenario.resolved.toml")));
    std::fs::write(run.join("report.json"), r#"{"scenario": "short-rx"}"#).unwrap();
    assert_eq!(source(&run).unwrap().0, "short-rx", "named as its report says");
}

#[test]
fn the_examples_in_help_parse() {
    let examples: Vec<&str> = HELP.split('`').skip(1).step_by(2).collect();
    assert!(examples.len() >= 6, "{examples:?}");
    for e in examples {
        assert!(parse(e).is_ok(), "help shows `{e}`, which does not parse: {:?}", parse(e));
    }
}

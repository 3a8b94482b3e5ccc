//! Tests of `bench_plan.rs`.
use super::*;

#[test]
fn cpu_lists_are_counted() {
    assert_eq!(count_cpus("0"), Ok(1));
    assert_eq!(count_cpus("1-3"), Ok(3));
    assert_eq!(count_cpus("0,2-3"), Ok(3));
    assert!(count_cpus("3-1").is_err());
    assert!(count_cpus("a").is_err());
}

#[test]
fn a_filter_picks_scenarios_and_servers_separately() {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let f = words(&["d16", "tokio"]);
    let scenarios = filtered(&SCENARIOS, &f, |s| s.name, &[]);
    let servers = filtered(&SERVERS, &f, |s| s.name, &[]);
    assert_eq!(scenarios.len(), 1);
    assert_eq!(scenarios[0].name, "c100-64B-d16");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].name, "tokio");
    let all = filtered(&SERVERS, &words(&["churn"]), |s| s.name, &[]);
    assert_eq!(all.len(), SERVERS.len());
}

#[test]
fn a_word_naming_the_other_benchmark_leaves_this_one_out() {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let f = words(&["plaintext"]);
    assert!(filtered(&SCENARIOS, &f, |s| s.name, &["plaintext-c100"]).is_empty());
    let servers = filtered(&SERVERS, &f, |s| s.name, &["hyper"]);
    assert_eq!(servers.len(), SERVERS.len());
    let f = words(&["hyper"]);
    assert!(filtered(&SERVERS, &f, |s| s.name, &["hyper"]).is_empty());
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// A plan of the scenarios and servers `filter` picks, as `from_args` picks them.
fn plan_for(filter: &[&str]) -> Plan {
    Plan {
        scenarios: filtered(&SCENARIOS, &words(filter), |s| s.name, &[]),
        servers: filtered(&SERVERS, &words(filter), |s| s.name, &[]),
        rounds: 2,
        warmup_s: 1.0,
        duration_s: 3.0,
        syscall_window_s: 1.0,
        server_cpus: None,
        client_cpus: None,
        client_threads: 1,
        server_threads: 1,
        quick: false,
        absent: Vec::new(),
    }
}

/// The (scenario, server) pairs of round 1.
fn pairs(plan: &Plan) -> Vec<(&'static str, &'static str)> {
    let runs = plan.runs().into_iter().filter(|run| run.2 == 1);
    runs.map(|(scenario, server, _)| (scenario.name, server.name))
        .collect()
}

fn binaries(echo_udp: bool) -> Binaries {
    Binaries {
        dispatch_echo: PathBuf::from("echo-server"),
        loadgen: PathBuf::from("loadgen"),
        peers: Vec::new(),
        echo_udp,
    }
}

#[test]
fn the_udp_scenario_runs_the_servers_with_a_udp_form() {
    let plan = plan_for(&["udp"]);
    assert_eq!(plan.scenarios.len(), 1);
    assert!(plan.scenarios[0].udp);
    let udp = [
        ("udp-64B", "echo-uring"),
        ("udp-64B", "echo-epoll"),
        ("udp-64B", "tokio"),
    ];
    assert_eq!(pairs(&plan), udp);
    assert_eq!(plan.peer_dirs(), ["tokio-udp-echo"]);
    assert_eq!(plan.runs().len(), 2 * udp.len());
    // Every server runs every TCP scenario, each peer in its TCP form.
    let all = plan_for(&[]);
    let tcp = SCENARIOS.iter().filter(|s| !s.udp).count();
    assert_eq!(pairs(&all).len(), tcp * SERVERS.len() + udp.len());
    let dirs = ["tokio-echo", "monoio-echo", "compio-echo", "tokio-udp-echo"];
    assert_eq!(all.peer_dirs(), dirs);
}

#[test]
fn a_tcp_scenario_filter_leaves_udp_out() {
    for filter in [&["c100"][..], &["64B-d1"], &["churn"], &["d16", "tokio"]] {
        let plan = plan_for(filter);
        assert!(!plan.scenarios.is_empty(), "{filter:?}");
        assert!(plan.scenarios.iter().all(|s| !s.udp), "{filter:?}");
        assert!(!plan.peer_dirs().contains(&"tokio-udp-echo"), "{filter:?}");
    }
    // A server filter alone keeps every scenario, UDP included, for that server.
    let tokio = plan_for(&["tokio"]);
    assert!(pairs(&tokio).contains(&("udp-64B", "tokio")));
    let monoio = plan_for(&["monoio"]);
    assert!(!pairs(&monoio)
        .iter()
        .any(|(scenario, _)| *scenario == "udp-64B"));
}

#[test]
fn echo_server_without_udp_is_absent_from_the_udp_runs() {
    let mut plan = plan_for(&[]);
    assert!(absent(&plan, &binaries(true)).is_empty());
    plan.absent = absent(&plan, &binaries(false));
    let absent_pairs: Vec<_> = plan.absent.iter().map(|a| (a.scenario, a.server)).collect();
    assert_eq!(
        absent_pairs,
        [("udp-64B", "echo-uring"), ("udp-64B", "echo-epoll")]
    );
    assert!(plan.absent.iter().all(|a| a.why == NO_UDP));
    assert_eq!(plan.absent_why("udp-64B", "echo-uring"), Some(NO_UDP));
    assert_eq!(plan.absent_why("c100-64B-d1", "echo-uring"), None);
    let udp_runs: Vec<_> = pairs(&plan)
        .into_iter()
        .filter(|(scenario, _)| *scenario == "udp-64B")
        .collect();
    assert_eq!(udp_runs, [("udp-64B", "tokio")]);
    // A plan without the UDP scenario has nothing absent.
    assert!(absent(&plan_for(&["c100"]), &binaries(false)).is_empty());
}

#[test]
fn a_help_text_lists_udp_only_as_an_option() {
    let help = |option: &str| {
        format!("Usage: echo-server [OPTIONS]\n\nOptions:\n{option}\n  -h, --help  Print help\n")
    };
    assert!(lists_udp(&help("      --udp  Serve UDP on the same port")));
    assert!(lists_udp(&help("  -u, --udp  Serve UDP on the same port")));
    assert!(!lists_udp(&help("      --udp-buffers <N>  UDP buffers")));
    assert!(!lists_udp(&help(
        "      --tcp  TCP only (UDP comes with --udp later)"
    )));
    assert!(!lists_udp(&help("      --backend <B>  io-uring or epoll")));
}

//! Graceful shutdown: SIGTERM lets in-flight commands finish, then turnout exits 0.

mod support;

use std::time::{Duration, Instant};

use support::{show, Env};

#[test]
fn sigterm_waits_for_an_in_flight_command_then_exits_zero() {
    let mut env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["PING"], b"+PONG\r\n");
    // A blocking command that times out after 1 s, on legacy.
    c.send_cmd(&["BLPOP", "web:never", "1"]);
    std::thread::sleep(Duration::from_millis(250));
    let signalled = Instant::now();
    env.turnout.send_sigterm();
    let reply = c
        .read_frame_within(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("in-flight BLPOP got no reply after SIGTERM: {e:?}"));
    assert_eq!(show(&reply), show(b"*-1\r\n"));
    let status = env
        .turnout
        .wait_exit(Duration::from_secs(15))
        .expect("turnout exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
}

#[test]
fn sigterm_with_idle_clients_exits_zero_within_the_grace_period() {
    let mut env = Env::custom(|b| b.proxy_option("shutdown_grace = \"2s\""), "legacy");
    let mut idle = env.turnout.raw();
    idle.expect_cmd(&["SET", "web:idle", "1"], b"+OK\r\n");
    let signalled = Instant::now();
    env.turnout.send_sigterm();
    let status = env
        .turnout
        .wait_exit(Duration::from_secs(8))
        .expect("turnout exits within its 2s grace period (plus slack) with an idle client");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(8));
    // The idle client's connection is closed.
    let (_, eof) = idle.read_to_eof(Duration::from_secs(2));
    assert!(eof, "idle client connection should be closed on shutdown");
}

#[test]
fn sigint_also_exits_zero() {
    let mut env = Env::standard();
    let mut c = env.turnout.raw();
    c.expect_cmd(&["SET", "web:int", "1"], b"+OK\r\n");
    c.send_cmd(&["BLPOP", "web:never", "0.5"]);
    std::thread::sleep(Duration::from_millis(100));
    let status = std::process::Command::new("kill")
        .args(["-INT", &env.turnout.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let reply = c
        .read_frame_within(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("in-flight BLPOP got no reply after SIGINT: {e:?}"));
    assert_eq!(show(&reply), show(b"*-1\r\n"));
    let status = env
        .turnout
        .wait_exit(Duration::from_secs(15))
        .expect("turnout exits after SIGINT");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn no_new_clients_are_served_after_sigterm() {
    let mut env = Env::standard();
    let mut busy = env.turnout.raw();
    busy.send_cmd(&["BLPOP", "web:never", "1"]);
    std::thread::sleep(Duration::from_millis(200));
    env.turnout.send_sigterm();
    std::thread::sleep(Duration::from_millis(200));
    // Either the connection is refused, or it is closed without serving the command.
    if let Ok(mut late) =
        support::RawClient::try_connect(&env.turnout.proxy_addr(), Duration::from_secs(1))
    {
        let _ = late.try_send(&support::cmd(&["SET", "web:late", "1"]));
        let (got, _) = late.read_to_eof(Duration::from_secs(3));
        assert!(
            !got.starts_with(b"+OK"),
            "a client connecting after SIGTERM was served: {}",
            show(&got)
        );
    }
    assert_eq!(show(&busy.read_frame()), show(b"*-1\r\n"));
    let status = env
        .turnout
        .wait_exit(Duration::from_secs(15))
        .expect("exit");
    assert_eq!(status.code(), Some(0));
    assert_eq!(env.legacy.get("web:late"), None);
}

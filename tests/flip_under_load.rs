//! Flip under load: 8 clients write unique keys through the proxy while the web-cache route is
//! flipped legacy <-> new 100 times. No client sees an error, no acknowledged write is lost or
//! duplicated, and every write that happened entirely between two flips landed on the target
//! of the flip before it.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{http, Env};

const CLIENTS: usize = 8;
const FLIPS: usize = 100;
const MAX_WRITES_PER_CLIENT: usize = 50_000;
const TEST_BOUND: Duration = Duration::from_secs(15);
const PAUSE_BETWEEN_FLIPS: Duration = Duration::from_millis(25);

struct Write {
    key: String,
    sent: Instant,
    acked: Instant,
}

struct Flip {
    started: Instant,
    answered: Instant,
    target: &'static str,
}

/// The window in which a route was stable, and its target.
struct Window {
    after: Option<Instant>,
    before: Option<Instant>,
    target: &'static str,
}

impl Window {
    fn contains(&self, w: &Write) -> bool {
        self.after.map_or(true, |t| w.sent > t) && self.before.map_or(true, |t| w.acked < t)
    }
}

#[test]
fn flipping_web_cache_100_times_under_load_loses_nothing() {
    let env = Env::standard();
    let initial_version = env.turnout.version();
    assert_eq!(env.turnout.target("web-cache"), "legacy");

    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + TEST_BOUND;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut con = env.turnout.client();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut writes = Vec::new();
                let mut errors = Vec::new();
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < deadline
                    && seq < MAX_WRITES_PER_CLIENT
                {
                    let key = format!("web:{client}:{seq}");
                    let sent = Instant::now();
                    let result: redis::RedisResult<()> =
                        redis::cmd("SET").arg(&key).arg(seq).query(&mut con);
                    let acked = Instant::now();
                    match result {
                        Ok(()) => writes.push(Write { key, sent, acked }),
                        Err(e) => errors.push(format!("SET {key}: {e}")),
                    }
                    seq += 1;
                }
                (writes, errors)
            })
        })
        .collect();

    // Let the clients get going on the initial route first.
    std::thread::sleep(Duration::from_millis(100));
    let admin = env.turnout.admin_addr();
    let mut flips = Vec::with_capacity(FLIPS);
    let mut flip_failures = Vec::new();
    for k in 0..FLIPS {
        if Instant::now() >= deadline {
            flip_failures.push(format!("ran out of time after {k} flips"));
            break;
        }
        let target = if k % 2 == 0 { "new" } else { "legacy" };
        let body = format!(r#"{{"target":"{target}","reason":"flip under load #{k}"}}"#);
        let started = Instant::now();
        let response = http::try_request(&admin, "PUT", "/v1/routes/web-cache", &[], Some(&body));
        let answered = Instant::now();
        match response {
            Ok(r) if r.status == 200 => flips.push(Flip {
                started,
                answered,
                target,
            }),
            Ok(r) => {
                flip_failures.push(format!("flip #{k}: {} {}", r.status, r.text()));
                break;
            }
            Err(e) => {
                flip_failures.push(format!("flip #{k}: {e}"));
                break;
            }
        }
        std::thread::sleep(PAUSE_BETWEEN_FLIPS);
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);

    let mut writes = Vec::new();
    let mut errors = Vec::new();
    for client in clients {
        let (w, e) = client.join().expect("client thread");
        writes.extend(w);
        errors.extend(e);
    }
    assert!(flip_failures.is_empty(), "flips failed: {flip_failures:?}");
    assert!(
        errors.is_empty(),
        "{} client errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(flips.len(), FLIPS);
    assert_eq!(env.turnout.version(), initial_version + FLIPS as u64);

    // Stable windows: before the first flip (initial route), then between flip k's 200 and
    // flip k+1's request.
    let mut windows = vec![Window {
        after: None,
        before: Some(flips[0].started),
        target: "legacy",
    }];
    for (k, flip) in flips.iter().enumerate() {
        windows.push(Window {
            after: Some(flip.answered),
            before: flips.get(k + 1).map(|f| f.started),
            target: flip.target,
        });
    }

    let keys: Vec<String> = writes.iter().map(|w| w.key.clone()).collect();
    let on_legacy = env.legacy.exists_many(&keys);
    let on_new = env.new.exists_many(&keys);
    let mut checked = 0;
    let mut misplaced = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        assert!(
            on_legacy[i] ^ on_new[i],
            "acknowledged write {} is on legacy: {}, on new: {} (must be on exactly one)",
            w.key,
            on_legacy[i],
            on_new[i]
        );
        if let Some(window) = windows.iter().find(|win| win.contains(w)) {
            checked += 1;
            let on_target = if window.target == "new" {
                on_new[i]
            } else {
                on_legacy[i]
            };
            if !on_target {
                misplaced.push(format!("{} (expected on {})", w.key, window.target));
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "{} of {checked} writes made between flips landed on the wrong endpoint, e.g. {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(5)]
    );
    assert!(
        checked > 0,
        "no write fell entirely between two flips ({} writes)",
        writes.len()
    );
    eprintln!(
        "flip under load: {} writes, {checked} checked against their window, {} flips",
        writes.len(),
        flips.len()
    );
    let history = env.turnout.admin_get("/v1/history").json();
    let entries = history["entries"].as_array().expect("history entries");
    assert_eq!(entries.len(), FLIPS, "one history entry per flip");
}

//! wgl-delay: the lab's latency and jitter element (this kernel has no
//! netem, so delay has to be done in userspace).
//!
//! It opens two TAP devices in the namespace it starts in, prints `ready`,
//! and from then on forwards every Ethernet frame read from one to the
//! other, in both directions, each held for `delay ± jitter` (uniform). The
//! lab moves the TAPs into the two namespaces a link joins; the fds stay
//! valid across the move. Per direction frames leave in the order they came
//! (a frame never overtakes the one before it), so jitter does not reorder.
//!
//! The delay and jitter come from a control file, `<generation> <delay µs>
//! <jitter µs>`, polled while running; a new generation is printed as
//! `applied <generation>` once in force. The process ends when it is killed,
//! when either TAP goes away (its namespace was deleted) or when the control
//! file does (the lab's log directory was removed); the TAPs are not
//! persistent, so they go with it.
//!
//! Usage: `wgl-delay --tap NAME --tap NAME --control FILE [--queue FRAMES]`

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// How often the control file is looked at.
const CONTROL_POLL: Duration = Duration::from_millis(20);
/// Frames in flight per direction before new ones are dropped, as a full
/// router queue would. 16384 full-size frames hold 50 ms at ~4 Gbit/s.
const DEFAULT_QUEUE: usize = 16384;
/// Larger than any frame a TAP without offloads hands over (MTU ≤ 65535).
const FRAME_BUF: usize = 65536;

/// The delay line's settings, shared by both directions.
#[derive(Debug, Default)]
struct Params {
    delay_us: AtomicU64,
    jitter_us: AtomicU64,
}

/// xorshift64*: plenty for spreading delays, and no dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0x9e37_79b9);
        // The state must never be zero.
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Debug)]
struct Args {
    taps: Vec<String>,
    control: PathBuf,
    queue: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut taps = Vec::new();
    let mut control = None;
    let mut queue = DEFAULT_QUEUE;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tap" => taps.push(value()?),
            "--control" => control = Some(PathBuf::from(value()?)),
            "--queue" => {
                queue = value()?
                    .parse()
                    .map_err(|e| format!("--queue: {e}"))
                    .and_then(|q| {
                        if q == 0 {
                            Err("--queue: must be at least 1".to_owned())
                        } else {
                            Ok(q)
                        }
                    })?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if taps.len() != 2 {
        return Err("give exactly two --tap NAME".into());
    }
    let control = control.ok_or("--control FILE is required")?;
    Ok(Args {
        taps,
        control,
        queue,
    })
}

/// Reads the control file: `(generation, delay µs, jitter µs)`.
fn read_control(path: &Path) -> Result<(u64, u64, u64), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let nums: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match nums[..] {
        [generation, delay, jitter] => Ok((generation, delay, jitter)),
        _ => Err(format!(
            "{}: expected `<generation> <delay µs> <jitter µs>`, got {text:?}",
            path.display()
        )),
    }
}

fn open_tap(name: &str) -> Result<SyncDevice, String> {
    // Left down: the lab brings it up once it is in its namespace.
    DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .build_sync()
        .map_err(|e| format!("cannot create TAP {name}: {e}"))
}

/// Reads frames from `from` and queues each with the time it may leave.
fn read_side(
    from: &SyncDevice,
    name: &str,
    params: &Params,
    queue: &SyncSender<(Instant, Vec<u8>)>,
    salt: u64,
) {
    let mut rng = Rng::seeded(salt);
    let mut buf = vec![0u8; FRAME_BUF];
    // The previous frame's release time: none may leave before it (FIFO).
    let mut last = Instant::now();
    loop {
        let n = match from.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // The TAP was unregistered: its namespace is gone, so is the link.
                eprintln!("wgl-delay: {name}: {e}; exiting");
                std::process::exit(0);
            }
        };
        let now = Instant::now();
        let delay = params.delay_us.load(Ordering::Relaxed);
        let jitter = params.jitter_us.load(Ordering::Relaxed);
        let us = if jitter == 0 {
            delay
        } else {
            // Uniform in [delay - jitter, delay + jitter], never below zero.
            let offset = rng.next() % (2 * jitter + 1);
            (delay + offset).saturating_sub(jitter)
        };
        let release = (now + Duration::from_micros(us)).max(last);
        last = release;
        match queue.try_send((release, buf[..n].to_vec())) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => std::process::exit(0),
        }
    }
}

/// Writes queued frames to `to`, each at its release time.
fn write_side(to: &SyncDevice, queue: &Receiver<(Instant, Vec<u8>)>) {
    while let Ok((release, frame)) = queue.recv() {
        let now = Instant::now();
        if release > now {
            std::thread::sleep(release - now);
        }
        // A write fails while the far TAP is down (the lab is still plugging
        // it in) or its queue is full: the frame is lost, as on a wire.
        let _ = to.send(&frame);
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "wgl-delay: {e}\nusage: wgl-delay --tap NAME --tap NAME --control FILE [--queue FRAMES]"
            );
            std::process::exit(2);
        }
    };
    let (mut generation, delay, jitter) = read_control(&args.control).unwrap_or_else(|e| {
        eprintln!("wgl-delay: {e}");
        std::process::exit(2);
    });
    let params = Arc::new(Params::default());
    params.delay_us.store(delay, Ordering::Relaxed);
    params.jitter_us.store(jitter, Ordering::Relaxed);

    let mut taps = Vec::new();
    for name in &args.taps {
        match open_tap(name) {
            Ok(t) => taps.push(Arc::new(t)),
            Err(e) => {
                eprintln!("wgl-delay: {e}");
                std::process::exit(1);
            }
        }
    }

    for (dir, (from, to)) in [(0usize, 1usize), (1, 0)].into_iter().enumerate() {
        let (tx, rx) = mpsc::sync_channel(args.queue);
        let (src, dst) = (Arc::clone(&taps[from]), Arc::clone(&taps[to]));
        let name = args.taps[from].clone();
        let p = Arc::clone(&params);
        std::thread::spawn(move || read_side(&src, &name, &p, &tx, dir as u64));
        std::thread::spawn(move || write_side(&dst, &rx));
    }
    println!("ready {generation}");

    loop {
        std::thread::sleep(CONTROL_POLL);
        if !args.control.exists() {
            // The lab removed its log directory: it is gone, and so is this.
            eprintln!("wgl-delay: {} is gone; exiting", args.control.display());
            std::process::exit(0);
        }
        // A half-written file (the lab renames a complete one into place,
        // so this should not happen) is simply read again next time.
        let Ok((g, delay, jitter)) = read_control(&args.control) else {
            continue;
        };
        if g != generation {
            params.delay_us.store(delay, Ordering::Relaxed);
            params.jitter_us.store(jitter, Ordering::Relaxed);
            generation = g;
            println!("applied {generation}");
        }
    }
}

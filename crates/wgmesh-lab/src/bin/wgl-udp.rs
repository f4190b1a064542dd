//! wgl-udp: plain UDP (and a little TCP) for probing the lab's NAT routers
//! from inside its hosts. Standard library only.
//!
//! A reflector answers every datagram with `seen ADDR:PORT`, the sender's
//! address as the reflector observed it (after any NAT on the way): what
//! STUN's XOR-MAPPED-ADDRESS tells a client, without the encoding. Nothing
//! ever answers a datagram that itself starts with `seen `, so two
//! reflectors can never ping-pong.
//!
//! ```text
//! wgl-udp reflect --bind ADDR:PORT [--bind …] [--first DST:PORT] [--once]
//!     One thread per socket. Prints `from SRC TEXT` for every datagram and
//!     answers it. --first: before that, send from the first socket to DST
//!     until it answers, and print `mapped ADDR:PORT` (the outside mapping
//!     of that socket). Prints `ready` once everything is bound (and mapped).
//!     --once: exit after answering one datagram.
//! wgl-udp probe --bind ADDR:PORT --to DST:PORT [--to …] [--timeout-ms N]
//!     From one socket, ask each DST in turn (resending every 100 ms) and
//!     print `DST ADDR:PORT` (what DST saw) or `DST timeout`.
//! wgl-udp send --bind ADDR:PORT --to DST:PORT [--text T]
//!     One datagram, no answer expected.
//! wgl-udp tcp-listen --bind ADDR:PORT [--bind …]
//!     Prints `ready`; writes `seen SRC\n` to every connection, prints `from SRC`.
//! wgl-udp tcp-connect --to DST:PORT [--timeout-ms N]
//!     Prints `connected <what the server wrote>` or `failed <error>`.
//! wgl-udp tcp-sink --bind ADDR:PORT --out FILE
//!     Prints `ready`; takes one connection, writes all it sends to FILE and
//!     prints `received N bytes in S s` when the sender closes.
//! wgl-udp tcp-source --to DST:PORT --file FILE [--timeout-ms N]
//!     Connects, sends FILE, closes; prints `sent N bytes in S s`.
//! ```
//!
//! Output is line-buffered by hand (flushed after every line) because the
//! lab's tests poll the log files of spawned instances.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: wgl-udp reflect --bind ADDR:PORT [--bind ...] [--first DST:PORT] [--once]
       wgl-udp probe --bind ADDR:PORT --to DST:PORT [--to ...] [--timeout-ms N]
       wgl-udp send --bind ADDR:PORT --to DST:PORT [--text T]
       wgl-udp tcp-listen --bind ADDR:PORT [--bind ...]
       wgl-udp tcp-connect --to DST:PORT [--timeout-ms N]
       wgl-udp tcp-sink --bind ADDR:PORT --out FILE
       wgl-udp tcp-source --to DST:PORT --file FILE [--timeout-ms N]";

/// How long a TCP transfer may stall before it fails.
const IDLE: Duration = Duration::from_secs(60);

/// How often an unanswered request is sent again.
const RESEND: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Args {
    bind: Vec<SocketAddr>,
    to: Vec<SocketAddr>,
    first: Option<SocketAddr>,
    once: bool,
    text: Option<String>,
    timeout: Option<Duration>,
    file: Option<std::path::PathBuf>,
    out: Option<std::path::PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let addr = |v: String| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("{flag} {v:?}: {e}"))
        };
        match flag.as_str() {
            "--bind" => out.bind.push(addr(value()?)?),
            "--to" => out.to.push(addr(value()?)?),
            "--first" => out.first = Some(addr(value()?)?),
            "--once" => out.once = true,
            "--text" => out.text = Some(value()?),
            "--file" => out.file = Some(value()?.into()),
            "--out" => out.out = Some(value()?.into()),
            "--timeout-ms" => {
                let v = value()?;
                let ms = v
                    .parse::<u64>()
                    .map_err(|e| format!("--timeout-ms {v:?}: {e}"))?;
                out.timeout = Some(Duration::from_millis(ms));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

/// Prints one line and flushes it, so that a log file shows it at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only loses the log; the network side still matters.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, String> {
    UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))
}

/// Sends `request` to `to` every [`RESEND`] until `to` answers with
/// `seen ADDR:PORT` or `timeout` passes; returns what it saw.
fn ask(
    sock: &UdpSocket,
    to: SocketAddr,
    request: &str,
    timeout: Duration,
) -> Result<Option<String>, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now >= next_send {
            // EPERM/ECONNREFUSED-style errors are a firewall's or an ICMP
            // error's doing: keep trying until the deadline, like a client.
            if let Err(e) = sock.send_to(request.as_bytes(), to) {
                eprintln!("send to {to}: {e}");
            }
            next_send = now + RESEND;
        }
        let wait = next_send.min(deadline).saturating_duration_since(now);
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                match text.strip_prefix("seen ") {
                    Some(seen) if from == to => return Ok(Some(seen.trim().to_owned())),
                    _ => eprintln!("ignored {from} {text}"),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// Answers (and logs) every datagram on `sock`; returns after one if `once`.
fn serve_udp(sock: &UdpSocket, once: bool) -> Result<(), String> {
    let mut buf = [0u8; 1500];
    sock.set_read_timeout(None)
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            // ICMP errors for earlier answers surface here; not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(format!("recv: {e}")),
        };
        let text = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        say(&format!("from {from} {text}"));
        if text.starts_with("seen ") {
            continue;
        }
        if let Err(e) = sock.send_to(format!("seen {from}").as_bytes(), from) {
            eprintln!("answer {from}: {e}");
        }
        if once {
            return Ok(());
        }
    }
}

fn reflect(a: Args) -> Result<(), String> {
    if a.bind.is_empty() {
        return Err("reflect needs --bind".into());
    }
    let socks = a
        .bind
        .iter()
        .map(|b| bind_udp(*b))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(first) = a.first {
        let seen = ask(&socks[0], first, "hello", Duration::from_secs(10))?
            .ok_or_else(|| format!("{first} did not answer within 10 s"))?;
        say(&format!("mapped {seen}"));
    }
    say("ready");
    let socks: Vec<Arc<UdpSocket>> = socks.into_iter().map(Arc::new).collect();
    let mut threads = Vec::new();
    for s in socks.iter().skip(1) {
        let s = Arc::clone(s);
        let once = a.once;
        threads.push(std::thread::spawn(move || serve_udp(&s, once)));
    }
    let r = serve_udp(&socks[0], a.once);
    if a.once {
        // The first socket answered once; that is the whole job.
        return r;
    }
    for t in threads {
        t.join().map_err(|_| "a reflector thread panicked")??;
    }
    r
}

fn probe(a: Args) -> Result<(), String> {
    let [bind] = a.bind[..] else {
        return Err("probe needs exactly one --bind".into());
    };
    if a.to.is_empty() {
        return Err("probe needs --to".into());
    }
    let timeout = a.timeout.unwrap_or(Duration::from_secs(2));
    let sock = bind_udp(bind)?;
    for to in &a.to {
        match ask(&sock, *to, "probe", timeout)? {
            Some(seen) => say(&format!("{to} {seen}")),
            None => say(&format!("{to} timeout")),
        }
    }
    Ok(())
}

fn send(a: Args) -> Result<(), String> {
    let ([bind], [to]) = (&a.bind[..], &a.to[..]) else {
        return Err("send needs one --bind and one --to".into());
    };
    let sock = bind_udp(*bind)?;
    let text = a.text.as_deref().unwrap_or("hello");
    sock.send_to(text.as_bytes(), to)
        .map_err(|e| format!("send to {to}: {e}"))?;
    say(&format!("sent {to} {text}"));
    Ok(())
}

fn tcp_listen(a: Args) -> Result<(), String> {
    if a.bind.is_empty() {
        return Err("tcp-listen needs --bind".into());
    }
    let listeners = a
        .bind
        .iter()
        .map(|b| TcpListener::bind(b).map_err(|e| format!("bind {b}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    say("ready");
    let mut threads = Vec::new();
    for l in listeners {
        threads.push(std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Ok(from) = conn.peer_addr() else { continue };
                say(&format!("from {from}"));
                let _ = conn.write_all(format!("seen {from}\n").as_bytes());
            }
        }));
    }
    for t in threads {
        t.join().map_err(|_| "a listener thread panicked")?;
    }
    Ok(())
}

fn tcp_connect(a: Args) -> Result<(), String> {
    let [to] = a.to[..] else {
        return Err("tcp-connect needs one --to".into());
    };
    let timeout = a.timeout.unwrap_or(Duration::from_secs(2));
    let result = TcpStream::connect_timeout(&to, timeout).and_then(|s| {
        s.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    });
    match result {
        Ok(line) => say(&format!("connected {}", line.trim())),
        Err(e) => say(&format!("failed {e}")),
    }
    Ok(())
}

fn tcp_sink(a: Args) -> Result<(), String> {
    let ([bind], Some(path)) = (&a.bind[..], &a.out) else {
        return Err("tcp-sink needs one --bind and --out".into());
    };
    let listener = TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    say("ready");
    let (mut conn, from) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    // A stalled sender fails the transfer instead of hanging it.
    conn.set_read_timeout(Some(IDLE))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    say(&format!("from {from}"));
    let start = Instant::now();
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = std::io::copy(&mut conn, &mut file).map_err(|e| format!("receive: {e}"))?;
    file.sync_all()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    say(&format!(
        "received {n} bytes in {:.3} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn tcp_source(a: Args) -> Result<(), String> {
    let ([to], Some(path)) = (&a.to[..], &a.file) else {
        return Err("tcp-source needs one --to and --file".into());
    };
    let timeout = a.timeout.unwrap_or(Duration::from_secs(10));
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let start = Instant::now();
    let mut conn =
        TcpStream::connect_timeout(to, timeout).map_err(|e| format!("connect {to}: {e}"))?;
    conn.set_write_timeout(Some(IDLE))
        .and_then(|()| conn.set_read_timeout(Some(IDLE)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let n = std::io::copy(&mut file, &mut conn).map_err(|e| format!("send: {e}"))?;
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    // Wait for the sink to close: then every byte has been read.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut conn, &mut rest).map_err(|e| format!("close: {e}"))?;
    say(&format!(
        "sent {n} bytes in {:.3} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let run = match mode.as_str() {
        "reflect" => reflect,
        "probe" => probe,
        "send" => send,
        "tcp-listen" => tcp_listen,
        "tcp-connect" => tcp_connect,
        "tcp-sink" => tcp_sink,
        "tcp-source" => tcp_source,
        _ => {
            eprintln!("unknown mode {mode:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match parse(rest).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgl-udp {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

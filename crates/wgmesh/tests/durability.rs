//! Nothing acknowledged is lost, nothing refused is kept: the real
//! `wgmesh server` under storage faults.
//!
//! - SQLite on a tiny tmpfs that fills up and is freed, then is remounted
//!   read-only and read-write again;
//! - PostgreSQL with the server's connections killed
//!   (`pg_terminate_backend`) while writes run, and refused for a while;
//! - each ends with a SIGKILL of the server and a restart: every write
//!   that got a 2xx is there with its audit row, and none that got an
//!   error is. While a fault lasts the answer is 503 `unavailable` with a
//!   request ID that is in the server's log; once it passes, writes work
//!   again without a restart.
//!
//! Also: a second server on the same SQLite file refuses to start and
//! names the first; start-up errors name their cause at once.
#![allow(clippy::unwrap_used)] // test code: a panic names the line that failed

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{PgDatabase, ServerProcess as Server, psql, server_init as init};

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");

/// One HTTP call through curl: (status, JSON body or Null).
fn call(url: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-m",
        "30",
        "-X",
        method,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ])
    .arg("-H")
    .arg(format!("authorization: Bearer {token}"));
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    let out = cmd.arg(format!("{url}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Every write made, by what the server answered.
#[derive(Debug, Default)]
struct Ledger {
    acked: BTreeSet<String>,
    refused: BTreeSet<String>,
    unavailable: usize,
    /// Request IDs of 503s, to be found in the server's log.
    request_ids: Vec<String>,
}

impl Ledger {
    /// Creates network `name`; records the answer. Anything but 201 or
    /// 503 `unavailable` fails the test (a 500 would be a bug).
    fn create_network(&mut self, url: &str, token: &str, name: &str, i: usize) -> u16 {
        let body = json!({ "name": name, "overlay": format!("10.{}.{}.0/24", i / 256, i % 256) });
        let (code, reply) = call(url, token, "POST", "/api/v1/networks", Some(&body));
        match code {
            201 => {
                self.acked.insert(name.to_owned());
            }
            503 => {
                assert_eq!(reply["error"], "unavailable", "{reply}");
                let id = reply["request_id"].as_str().unwrap_or_else(|| {
                    panic!("a 503 without a request_id: {reply}");
                });
                self.request_ids.push(id.to_owned());
                self.unavailable += 1;
                self.refused.insert(name.to_owned());
            }
            0 => {
                // No answer at all (connection refused or cut): the
                // outcome is unknown to the client, so neither list.
                panic!("no answer for {name}");
            }
            other => panic!(
                "{name}: unexpected {other}: {reply}\n(the server log says why, by request_id)"
            ),
        }
        code
    }

    /// After a restart: every acknowledged write is there with its audit
    /// row, no refused one is.
    fn check(&self, url: &str, token: &str) -> usize {
        let (code, nets) = call(url, token, "GET", "/api/v1/networks", None);
        assert_eq!(code, 200, "{nets}");
        let present: BTreeSet<String> = nets
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect();
        let mut audited = BTreeSet::new();
        let mut after = 0;
        loop {
            let (code, page) = call(
                url,
                token,
                "GET",
                &format!("/api/v1/audit?after={after}&limit=1000"),
                None,
            );
            assert_eq!(code, 200, "{page}");
            // The page is a list, or an object with `entries` once the
            // audit API says when a page is capped.
            let entries = page
                .as_array()
                .or_else(|| page["entries"].as_array())
                .unwrap()
                .clone();
            if entries.is_empty() {
                break;
            }
            for e in &entries {
                after = after.max(e["id"].as_i64().unwrap());
                if e["action"] == "network.create" {
                    audited.insert(e["after"]["name"].as_str().unwrap().to_owned());
                }
            }
        }
        let lost: Vec<_> = self.acked.difference(&present).collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
        let unaudited: Vec<_> = self.acked.difference(&audited).collect();
        assert!(
            unaudited.is_empty(),
            "acknowledged without audit: {unaudited:?}"
        );
        let kept: Vec<_> = self.refused.intersection(&present).collect();
        assert!(kept.is_empty(), "refused but kept: {kept:?}");
        let kept_audit: Vec<_> = self.refused.intersection(&audited).collect();
        assert!(kept_audit.is_empty(), "refused but audited: {kept_audit:?}");
        assert_eq!(present, audited, "networks and their audit rows");
        present.len()
    }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir.path(),
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        run("mount", &["-o", &format!("remount,{mode}")], self.path());
    }

    /// Fills the file system to the last byte; returns the filler.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xa5u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling: {e}"),
            }
        }
        // Single bytes into the last partial page.
        while f.write(&[0]).is_ok_and(|n| n == 1) {}
        filler
    }
}

/// An ext4 file system on a loop device, mounted `errors=remount-ro`, so
/// that the kernel can be made to force it read-only under the server (a
/// plain `mount -o remount,ro` is refused while files are open for
/// writing). Unmounted and detached when dropped.
struct Ext4 {
    dir: tempfile::TempDir,
    device: String,
}

impl Ext4 {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F"], &image);
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let fs = Self { dir, device };
        std::fs::create_dir(fs.path()).unwrap();
        fs.attach();
        fs
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn attach(&self) {
        run(
            "mount",
            &["-o", "errors=remount-ro", &self.device],
            &self.path(),
        );
    }

    /// What the kernel does on a metadata error: the file system turns
    /// read-only under every open file.
    fn force_read_only(&self) {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1").unwrap();
    }

    /// What the operator does next: unmount, check, mount again.
    fn repair(&self) {
        run("umount", &[], &self.path());
        let _ = Command::new("e2fsck")
            .args(["-f", "-y", &self.device])
            .output();
        self.attach();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn run(cmd: &str, args: &[&str], last: &Path) {
    let out = Command::new(cmd).args(args).arg(last).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn can_mount() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes until one succeeds (the fault has passed), within `within`.
fn until_healed(ledger: &mut Ledger, s: &Server, token: &str, next: &mut usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let i = *next;
        *next += 1;
        if ledger.create_network(&s.url, token, &format!("n{i}"), i) == 201 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still failing {within:?} after the fault passed:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sqlite_full_disk_loses_nothing_acknowledged() {
    assert!(can_mount(), "this test mounts a tmpfs: run it as root");
    // Room for the WAL (SQLite checkpoints it at 1,000 pages, 4 MiB).
    let fs = Tmpfs::mount("8m");
    let database = format!("sqlite://{}/server.db", fs.path().display());
    let token = init(&database);
    let server = Server::start(&database);
    let mut ledger = Ledger::default();
    let mut next = 0;
    let mut write = |ledger: &mut Ledger, n: usize| {
        for _ in 0..n {
            let i = next;
            next += 1;
            ledger.create_network(&server.url, &token, &format!("n{i}"), i);
        }
    };
    write(&mut ledger, 40);
    assert_eq!(ledger.acked.len(), 40, "before any fault");

    // The disk fills up.
    let filler = fs.fill();
    write(&mut ledger, 40);
    assert!(
        ledger.unavailable >= 30,
        "a full disk must give 503s (got {} of 40)",
        ledger.unavailable
    );
    // It is freed: writes work again, by themselves.
    std::fs::remove_file(&filler).unwrap();
    let mut next2 = next;
    until_healed(
        &mut ledger,
        &server,
        &token,
        &mut next2,
        Duration::from_secs(10),
    );
    next = next2;
    let mut write = |ledger: &mut Ledger, n: usize| {
        for _ in 0..n {
            let i = next;
            next += 1;
            assert_eq!(
                ledger.create_network(&server.url, &token, &format!("n{i}"), i),
                201,
                "after the disk was freed:\n{}",
                server.log_text()
            );
        }
    };
    write(&mut ledger, 20);

    let log = server.log_text();
    for id in &ledger.request_ids {
        assert!(log.contains(id), "request {id} is not in the log:\n{log}");
    }
    // SIGKILL, restart, count.
    server.kill();
    let server = Server::start(&database);
    let found = ledger.check(&server.url, &token);
    eprintln!(
        "sqlite: {} writes acknowledged, {} refused with 503, {found} found after SIGKILL + restart",
        ledger.acked.len(),
        ledger.refused.len()
    );
    assert_eq!(found, ledger.acked.len());
}

#[test]
fn sqlite_forced_read_only_gives_503_and_loses_nothing_acknowledged() {
    assert!(
        can_mount(),
        "this test mounts a loop device: run it as root"
    );
    let fs = Ext4::mount();
    let database = format!("sqlite://{}/server.db", fs.path().display());
    let token = init(&database);
    let server = Server::start(&database);
    let mut ledger = Ledger::default();
    for i in 0..20 {
        assert_eq!(
            ledger.create_network(&server.url, &token, &format!("n{i}"), i),
            201
        );
    }
    fs.force_read_only();
    for i in 20..30 {
        ledger.create_network(&server.url, &token, &format!("n{i}"), i);
    }
    assert_eq!(
        ledger.unavailable, 10,
        "a read-only file system: every write is 503"
    );
    // Reads are served from memory meanwhile.
    let (code, nets) = call(&server.url, &token, "GET", "/api/v1/networks", None);
    assert_eq!((code, nets.as_array().map(Vec::len)), (200, Some(20)));
    let log = server.log_text();
    assert!(
        log.contains("read-only") || log.contains("cannot be written"),
        "{log}"
    );
    for id in &ledger.request_ids {
        assert!(log.contains(id), "request {id} is not in the log");
    }
    // A forced read-only ext4 comes back only through an unmount and a
    // check, so the server is restarted (SIGKILL: nothing flushed on exit).
    server.kill();
    fs.repair();
    let server = Server::start(&database);
    let found = ledger.check(&server.url, &token);
    eprintln!(
        "sqlite read-only: {} acknowledged, {} refused with 503, {found} found after repair + restart",
        ledger.acked.len(),
        ledger.refused.len()
    );
    assert_eq!(found, 20);
}

#[test]
fn postgres_connections_killed_mid_run_lose_nothing_acknowledged() {
    let Some(pg) = PgDatabase::create("postgres_connections_killed_mid_run") else {
        return;
    };
    let token = init(&pg.url);
    let server = Server::start(&pg.url);
    let kill_sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        pg.name
    );
    // A killer thread terminates the server's connections every 30 ms
    // while two writers run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (stop, admin, sql) = (stop.clone(), pg.admin_url.clone(), kill_sql.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                psql(&admin, &sql);
                kills += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
            kills
        })
    };
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, token) = (server.url.clone(), token.clone());
            std::thread::spawn(move || {
                let mut ledger = Ledger::default();
                for k in 0..150 {
                    let i = w * 1000 + k;
                    ledger.create_network(&url, &token, &format!("w{w}n{k}"), i);
                }
                ledger
            })
        })
        .collect();
    let mut ledger = Ledger::default();
    for w in writers {
        let l = w.join().unwrap();
        ledger.acked.extend(l.acked);
        ledger.refused.extend(l.refused);
        ledger.unavailable += l.unavailable;
        ledger.request_ids.extend(l.request_ids);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.join().unwrap();

    // The database refuses new connections for a while: 503, then heals.
    psql(
        &pg.admin_url,
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", pg.name),
    );
    psql(&pg.admin_url, &kill_sql);
    let before = ledger.unavailable;
    for k in 0..3 {
        let (code, reply) = call(
            &server.url,
            &token,
            "POST",
            "/api/v1/networks",
            Some(&json!({ "name": format!("off{k}"), "overlay": format!("10.99.{k}.0/24") })),
        );
        assert_eq!(code, 503, "{reply}\n{}", server.log_text());
        ledger.refused.insert(format!("off{k}"));
        ledger.unavailable += 1;
        ledger
            .request_ids
            .push(reply["request_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        ledger.unavailable - before,
        3,
        "no database: every write is 503"
    );
    psql(
        &pg.admin_url,
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", pg.name),
    );
    let mut next = 4000;
    until_healed(
        &mut ledger,
        &server,
        &token,
        &mut next,
        Duration::from_secs(15),
    );

    let log = server.log_text();
    for id in &ledger.request_ids {
        assert!(log.contains(id), "request {id} is not in the log");
    }
    server.kill();
    let server = Server::start(&pg.url);
    let found = ledger.check(&server.url, &token);
    eprintln!(
        "postgres: {kills} rounds of pg_terminate_backend; {} writes acknowledged, {} refused with 503, {found} found after SIGKILL + restart",
        ledger.acked.len(),
        ledger.refused.len()
    );
    assert!(ledger.acked.len() >= 150, "most writes must get through");
    drop(server);
}

#[test]
fn a_second_server_on_one_sqlite_file_refuses_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/server.db", dir.path().display());
    let token = init(&database);
    let first = Server::start(&database);
    let log = match Server::try_start(&database) {
        Ok(_) => panic!("a second server started on the same file"),
        Err(log) => log,
    };
    let pid = first.child.id().to_string();
    let addr = first.url.trim_start_matches("http://");
    assert!(
        log.contains("in use by another wgmesh process")
            && log.contains(&format!("pid {pid}"))
            && log.contains(addr),
        "the refusal must name pid {pid} and {addr}:\n{log}"
    );
    // `server init` is refused too while the server runs.
    let out = Command::new(WGMESH)
        .args(["server", "init", "--database", &database, "--force"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("pid {pid}")));
    // The first is untouched; a clash is 409 with the field; once the
    // first is gone, a server starts.
    let net = json!({ "name": "seed", "overlay": "10.1.0.0/24" });
    let (code, _) = call(&first.url, &token, "POST", "/api/v1/networks", Some(&net));
    assert_eq!(code, 201);
    let net = json!({ "name": "seed", "overlay": "10.2.0.0/24" });
    let (code, reply) = call(&first.url, &token, "POST", "/api/v1/networks", Some(&net));
    assert_eq!(
        (code, &reply["error"], &reply["field"]),
        (409, &json!("conflict"), &json!("name")),
        "{reply}"
    );
    first.kill();
    let again = Server::start(&database);
    let (code, _) = call(&again.url, &token, "GET", "/api/v1/networks", None);
    assert_eq!(code, 200);
}

/// The server's exit and first line for a database that cannot work.
fn refusal(database: &str) -> String {
    let started = Instant::now();
    let log = match Server::try_start(database) {
        Ok(_) => panic!("the server started on {database}"),
        Err(log) => log,
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?} to refuse {database}",
        started.elapsed()
    );
    log
}

#[test]
fn start_up_errors_name_their_cause_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}/{name}", dir.path().display());

    std::fs::write(
        dir.path().join("text.db"),
        "this is not a database\n".repeat(100),
    )
    .unwrap();
    let log = refusal(&url("text.db"));
    assert!(log.contains("is not a wgmesh database"), "{log}");

    std::fs::write(dir.path().join("empty.db"), "").unwrap();
    let log = refusal(&url("empty.db"));
    assert!(
        log.contains("is empty") && log.contains("server init"),
        "{log}"
    );

    let log = refusal(&url("missing.db"));
    assert!(
        log.contains("no database at") && log.contains("server init"),
        "{log}"
    );

    let log = refusal(&format!("sqlite://{}/nodir/x.db", dir.path().display()));
    assert!(
        log.contains(&format!("{}/nodir does not exist", dir.path().display()))
            && log.contains("server init"),
        "{log}"
    );

    // A truncated copy of a real database.
    let real = url("real.db");
    init(&real);
    let bytes = std::fs::read(dir.path().join("real.db")).unwrap();
    std::fs::write(dir.path().join("cut.db"), &bytes[..bytes.len() / 2]).unwrap();
    let log = refusal(&url("cut.db"));
    assert!(log.contains("truncated"), "{log}");

    // A read-only mount (nothing has it open, so a remount works).
    assert!(can_mount(), "this test mounts a tmpfs: run it as root");
    let fs = Tmpfs::mount("4m");
    let ro = format!("sqlite://{}/server.db", fs.path().display());
    init(&ro);
    fs.remount("ro");
    let log = refusal(&ro);
    assert!(log.contains("cannot be written"), "{log}");
    fs.remount("rw");
}

#[test]
fn init_makes_private_files_and_refuses_a_second_time_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("state");
    let database = format!("sqlite://{}/server.db", db_dir.display());
    init(&database);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db_dir), 0o700);
    assert_eq!(mode(&db_dir.join("server.db")), 0o600);
    let out = Command::new(WGMESH)
        .args(["server", "init", "--database", &database])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second init must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --force adds a second token; both work.
    let out = Command::new(WGMESH)
        .args(["server", "init", "--database", &database, "--force"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = String::from_utf8(out.stdout).unwrap();
    assert!(
        second.lines().last().unwrap().starts_with("wga_"),
        "{second}"
    );
}

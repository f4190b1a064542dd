//! The `wgmesh` command line as an operator uses it: key files, conf checks,
//! and plan renders into a directory that is rendered again and again.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SEED: &str = include_str!("../../../examples/seed-mesh.toml");

fn wgmesh(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wgmesh starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wgmesh runs")
}

fn ok(args: &[&str]) -> String {
    let out = wgmesh(args, "");
    assert!(
        out.status.success(),
        "wgmesh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a command that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = wgmesh(args, "");
    assert!(!out.status.success(), "wgmesh {args:?} should have failed");
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.insert(path.clone(), fs::read(&path).expect("readable"));
        }
    }
    out
}

fn changed(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
    let mut names: Vec<String> = after
        .iter()
        .filter(|(p, bytes)| before.get(*p) != Some(*bytes))
        .map(|(p, _)| p.file_name().expect("file").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn genkey_out_is_0600_and_never_overwritten_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("k.key");
    ok(&["genkey", "--out", s(&file)]);
    assert_eq!(mode(&file), 0o600);
    let first = fs::read_to_string(&file).expect("key");
    assert_eq!(first.trim_end().len(), 44);

    let err = fails(&["genkey", "--out", s(&file)]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read_to_string(&file).expect("key"), first, "unchanged");

    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
    ok(&["genkey", "--out", s(&file), "--force"]);
    assert_ne!(fs::read_to_string(&file).expect("key"), first);
    assert_eq!(mode(&file), 0o600, "--force also restores 0600");
}

#[test]
fn genpsk_and_pubkey() {
    let a = ok(&["genpsk"]);
    let b = ok(&["genpsk"]);
    assert_eq!(a.len(), 45);
    assert_ne!(a, b);
    let private = ok(&["genkey"]);
    let out = wgmesh(&["pubkey"], &private);
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 45);
    for bad in ["", "abc\n", " x\n"] {
        let out = wgmesh(&["pubkey"], bad);
        assert!(!out.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad private key on stdin"), "{err}");
    }
}

#[test]
fn conf_check_reports_every_error_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.conf");
    fs::write(
        &file,
        "[Interface]\nPrivateKey = nope\nListenPort = 70000\n\n[Peer]\nAllowedIPs = 10.0.0.0/33\n",
    )
    .expect("write");
    let err = fails(&["conf", "check", s(&file)]);
    for expected in [
        "bad.conf:line 2: bad key in PrivateKey",
        "bad.conf:line 3: bad ListenPort \"70000\"",
        "bad.conf:line 5: [Peer] has no PublicKey",
        "bad.conf:line 6: bad CIDR \"10.0.0.0/33\" in AllowedIPs",
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
    assert!(!err.contains("nope\n"), "the key text itself is not echoed");
}

#[test]
fn render_writes_keys_once_and_reuses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.toml");
    fs::write(&mesh, SEED).expect("write");
    let out = dir.path().join("out");
    ok(&["plan", "render", s(&mesh), "--out", s(&out)]);

    for node in ["nyc", "lax", "lab"] {
        let key = out.join(format!("keys/{node}.key"));
        assert_eq!(mode(&key), 0o600, "{node}.key");
        assert_eq!(
            mode(&out.join(format!("{node}.conf"))),
            0o600,
            "{node}.conf holds a key"
        );
        let conf = ok(&["conf", "check", s(&out.join(format!("{node}.conf")))]);
        assert!(conf.contains("ok"), "{conf}");
        // The key in the file is the key in keys/.
        let secret = fs::read_to_string(&key).expect("key");
        let text = fs::read_to_string(out.join(format!("{node}.conf"))).expect("conf");
        assert!(text.contains(&format!("PrivateKey = {}", secret.trim_end())));
    }
    assert_eq!(mode(&out.join("keys")), 0o700);
    let ignore = fs::read_to_string(out.join("keys/.gitignore")).expect(".gitignore");
    assert!(ignore.lines().any(|l| l == "*"), "{ignore}");

    // lax reaches lab through nyc: its nyc peer carries 10.10.0.3/32.
    let lax = fs::read_to_string(out.join("lax.conf")).expect("lax.conf");
    assert!(
        lax.contains("AllowedIPs = 10.10.0.1/32, 10.10.0.3/32"),
        "{lax}"
    );

    let before = snapshot(&out);
    let report = ok(&["plan", "render", s(&mesh), "--out", s(&out)]);
    assert_eq!(snapshot(&out), before, "a second render changes nothing");
    assert!(!report.contains("created"), "{report}");
}

#[test]
fn adding_a_node_changes_only_the_files_that_must_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.toml");
    let base = "[network]\nname = \"hs\"\ncidr = \"10.30.0.0/24\"\ntopology = \"hub-and-spoke\"\nhubs = [\"hub\"]\n\
                [[node]]\nname = \"hub\"\nendpoint = \"192.0.2.1\"\n\
                [[node]]\nname = \"s1\"\n\
                [[node]]\nname = \"s2\"\nendpoint = \"192.0.2.2\"\n";
    fs::write(&mesh, base).expect("write");
    let out = dir.path().join("out");
    ok(&["plan", "render", s(&mesh), "--out", s(&out)]);
    let before = snapshot(&out);

    // A new spoke, written first among the spokes: no address moves.
    let grown = base.replace(
        "[[node]]\nname = \"s1\"\n",
        "[[node]]\nname = \"s0\"\n[[node]]\nname = \"s1\"\n",
    );
    fs::write(&mesh, grown).expect("write");
    ok(&["plan", "render", s(&mesh), "--out", s(&out)]);
    let after = snapshot(&out);
    assert_eq!(
        changed(&before, &after),
        ["hub.conf", "s0.conf", "s0.key", "s0.setup.sh"]
    );
    let s0 = fs::read_to_string(out.join("s0.conf")).expect("s0.conf");
    assert!(s0.contains("Address = 10.30.0.4/24"), "{s0}");
}

#[test]
fn public_key_nodes_get_a_placeholder_and_key_files_keep_confs_secret_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab_key = ok(&["genkey"]);
    let lab_pub = String::from_utf8(wgmesh(&["pubkey"], &lab_key).stdout).expect("utf-8");
    let mesh = dir.path().join("mesh.toml");
    fs::write(
        &mesh,
        SEED.replace(
            "name = \"lab\"",
            &format!("name = \"lab\"\npublic_key = \"{}\"", lab_pub.trim_end()),
        ),
    )
    .expect("write");
    let out = dir.path().join("out");
    ok(&["plan", "render", s(&mesh), "--out", s(&out)]);
    assert!(
        !out.join("keys/lab.key").exists(),
        "lab's key never existed here"
    );
    let lab = fs::read_to_string(out.join("lab.conf")).expect("lab.conf");
    assert!(lab.contains("PrivateKey = <private key of lab>"), "{lab}");
    let err = fails(&["conf", "check", s(&out.join("lab.conf"))]);
    assert!(err.contains("placeholder"), "{err}");
    let nyc = fs::read_to_string(out.join("nyc.conf")).expect("nyc.conf");
    assert!(nyc.contains(&format!("PublicKey = {}", lab_pub.trim_end())));

    // Filling in the placeholder with the command the comment gives (the
    // key file moved from /etc/wireguard to a scratch path) makes a valid file.
    let key_file = dir.path().join("lab.key");
    fs::write(&key_file, &lab_key).expect("write key");
    let hint: Vec<&str> = lab
        .lines()
        .skip_while(|l| !l.contains("(umask 077; awk"))
        .take(2)
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    let command = hint
        .join("\n")
        .replace("/etc/wireguard/lab.key", s(&key_file));
    let run = Command::new("sh")
        .args(["-c", &command])
        .current_dir(&out)
        .output()
        .expect("sh");
    assert!(
        run.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        mode(&out.join("lab.conf")),
        0o600,
        "the filled file stays private"
    );
    ok(&["conf", "check", s(&out.join("lab.conf"))]);

    let secretless = dir.path().join("secretless");
    ok(&[
        "plan",
        "render",
        s(&mesh),
        "--out",
        s(&secretless),
        "--key-files",
    ]);
    for node in ["nyc", "lax", "lab"] {
        let text = fs::read_to_string(secretless.join(format!("{node}.conf"))).expect("conf");
        assert!(!text.contains("PrivateKey"), "{text}");
        assert!(
            text.contains(&format!(
                "PostUp = wg set %i private-key /etc/wireguard/{node}.key"
            )),
            "{text}"
        );
        ok(&["conf", "check", s(&secretless.join(format!("{node}.conf")))]);
    }
}

#[test]
fn plan_check_and_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.toml");
    fs::write(&mesh, SEED).expect("write");
    let out = ok(&["plan", "check", s(&mesh)]);
    assert!(out.contains("ok"), "{out}");
    assert!(
        fs::read_dir(dir.path()).expect("dir").count() == 1,
        "check writes nothing"
    );

    let table = ok(&["plan", "show", s(&mesh)]);
    assert!(table.contains("lab via nyc"), "{table}");
    assert!(
        table.contains("tunnels: 2 (a full mesh of 3 nodes has N·(N−1)/2 = 3)"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["plan", "show", s(&mesh), "--format", "json"])).expect("json");
    assert_eq!(json["tunnels"], 2);
    assert_eq!(json["full_mesh_tunnels"], 3);
    assert_eq!(json["nodes"][2]["name"], "lab");
    assert_eq!(json["nodes"][2]["address"], "10.10.0.3");

    let unroutable = SEED
        .replace("hubs = [\"nyc\"]", "hubs = []")
        .replace("via_hub = true", "")
        .replace("endpoint = \"203.0.113.20:51820\"", "");
    fs::write(&mesh, unroutable).expect("write");
    let err = fails(&["plan", "check", s(&mesh)]);
    assert!(err.contains("cannot route"), "{err}");
    assert!(
        err.contains("\"lax\" and \"lab\" are both behind NAT"),
        "{err}"
    );
}

#[test]
fn render_never_writes_through_symlinks_or_into_foreign_dirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.toml");
    fs::write(&mesh, SEED).expect("write");
    let out = dir.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").expect("write");
    std::os::unix::fs::symlink(&victim, out.join("lax.setup.sh")).expect("symlink");
    let err = fails(&["plan", "render", s(&mesh), "--out", s(&out)]);
    assert!(err.contains("refusing"), "{err}");
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");

    // A directory somebody else made (in /tmp anyone could) is refused.
    let foreign = dir.path().join("foreign");
    fs::create_dir(&foreign).expect("mkdir");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown to nobody");
    let err = fails(&["plan", "render", s(&mesh), "--out", s(&foreign)]);
    assert!(err.contains("not to us"), "{err}");
    assert_eq!(fs::read_dir(&foreign).expect("dir").count(), 0);
}

#[test]
fn show_keeps_the_addresses_of_an_earlier_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.toml");
    let out = dir.path().join("out");
    let base = "[network]\nname = \"m\"\ncidr = \"10.40.0.0/24\"\n\
                [[node]]\nname = \"a\"\nendpoint = \"192.0.2.1\"\n\
                [[node]]\nname = \"c\"\nendpoint = \"192.0.2.3\"\n";
    fs::write(&mesh, base).expect("write");
    ok(&["plan", "render", s(&mesh), "--out", s(&out)]);
    fs::write(
        &mesh,
        base.replace(
            "[[node]]\nname = \"c\"",
            "[[node]]\nname = \"b\"\n[[node]]\nname = \"c\"",
        ),
    )
    .expect("write");
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "plan",
        "show",
        s(&mesh),
        "--out",
        s(&out),
        "--format",
        "json",
    ]))
    .expect("json");
    assert_eq!(json["nodes"][2]["name"], "c");
    assert_eq!(
        json["nodes"][2]["address"], "10.40.0.2",
        "c keeps its address"
    );
    assert_eq!(
        json["nodes"][1]["address"], "10.40.0.3",
        "b gets the next free one"
    );
}

//! `wgmesh conf check` refuses what `wgmesh wg up` would refuse (issue 10,
//! part 6): for a table of wg-quick files, each is given to `conf check`
//! and to a real `wgmesh wg up` in a lab host, and the two must agree. The
//! files are the ones that used to pass the check and then fail halfway
//! through `up` (an MTU the kernel refuses, IPv6 on a link below 1280, an
//! address the kernel will not assign or already has, a table ip(8) does
//! not know), next to their valid neighbours.
//!
//! What no check of the file can know stays out: a ListenPort taken by
//! another process, an Endpoint host name that does not resolve, a hook
//! that fails. And one difference is on purpose: `conf check` wants a
//! PrivateKey (or a PostUp that sets one), while `up` brings up an
//! interface without one, as wg-quick does; that row says so.

mod support;

use std::io::Read as _;
use std::path::PathBuf;

use wgmesh_core::key::PrivateKey;
use wgmesh_lab::Lab;

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");

fn random_key() -> PrivateKey {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    PrivateKey::from_random(b)
}

/// One file: its `[Interface]` lines (PrivateKey added unless `no_key`),
/// its one peer's AllowedIPs (no peer if empty), and whether `up` takes it.
struct Case {
    name: &'static str,
    interface: &'static str,
    allowed_ips: &'static str,
    up_accepts: bool,
    no_key: bool,
}

const fn case(
    name: &'static str,
    interface: &'static str,
    allowed_ips: &'static str,
    up_accepts: bool,
) -> Case {
    Case {
        name,
        interface,
        allowed_ips,
        up_accepts,
        no_key: false,
    }
}

const CASES: &[Case] = &[
    case(
        "plain, both families",
        "Address = 10.77.0.1/24, fd00::1/64\nMTU = 1420",
        "10.77.0.2/32, fd00::2/128",
        true,
    ),
    case(
        "MTU 68, IPv4 only",
        "MTU = 68\nAddress = 10.77.0.1/24",
        "10.77.0.2/32",
        true,
    ),
    case(
        "MTU 1280 with IPv6",
        "MTU = 1280\nAddress = fd00::1/64",
        "fd00::2/128",
        true,
    ),
    case("MTU 65535", "MTU = 65535\nAddress = 10.77.0.1/24", "", true),
    case(
        "small MTU, IPv6 not routed",
        "MTU = 1000\nAddress = 10.77.0.1/24\nTable = off",
        "fd00::2/128",
        true,
    ),
    case(
        "one IPv4 address, two prefixes",
        "Address = 10.77.0.1/24, 10.77.0.1/16",
        "",
        true,
    ),
    case(
        "a numbered table",
        "Address = 10.77.0.1/24\nTable = 1234",
        "10.78.0.0/16",
        true,
    ),
    case(
        "a built-in table name",
        "Address = 10.77.0.1/24\nTable = main",
        "10.78.0.0/16",
        true,
    ),
    case("MTU 0", "MTU = 0\nAddress = 10.77.0.1/24", "", false),
    case("MTU 67", "MTU = 67\nAddress = 10.77.0.1/24", "", false),
    case(
        "MTU 65536",
        "MTU = 65536\nAddress = 10.77.0.1/24",
        "",
        false,
    ),
    case(
        "MTU 1279 with an IPv6 address",
        "MTU = 1279\nAddress = 10.77.0.1/24, fd00::1/64",
        "",
        false,
    ),
    case(
        "MTU 1000 with a routed IPv6 AllowedIPs",
        "MTU = 1000\nAddress = 10.77.0.1/24",
        "10.77.0.2/32, fd00::2/128",
        false,
    ),
    case(
        "the same IPv4 address twice",
        "Address = 10.77.0.1/24\nAddress = 10.77.0.1/24",
        "",
        false,
    ),
    case(
        "one IPv6 address, two prefixes",
        "Address = fd00::1/64, fd00::1/48",
        "",
        false,
    ),
    case(
        "an IPv6 multicast address",
        "Address = ff02::5/128",
        "",
        false,
    ),
    case("the IPv6 unspecified address", "Address = ::/0", "", false),
    case("the IPv6 loopback address", "Address = ::1/128", "", false),
    case(
        "an unknown table name",
        "Address = 10.77.0.1/24\nTable = wgmesh_no_such_table",
        "10.78.0.0/16",
        false,
    ),
];

/// The one difference on purpose (see the module doc).
const NO_KEY: Case = Case {
    name: "no PrivateKey",
    interface: "Address = 10.77.0.1/24",
    allowed_ips: "",
    up_accepts: true,
    no_key: true,
};

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn conf_check_refuses_exactly_what_wg_up_refuses() {
    let Some(mut lab) = Lab::for_test("conf_check_refuses_exactly_what_wg_up_refuses") else {
        return;
    };
    lab.add_public_host("a", "203.0.113.1".parse().expect("ip"))
        .expect("host a");
    let mut disagree = Vec::new();
    for (n, case) in CASES.iter().chain([&NO_KEY]).enumerate() {
        let iface = lab.id().wg_iface(n);
        lab.remove_on_drop(PathBuf::from(format!("/var/run/wireguard/{iface}.sock")));
        lab.remove_on_drop(PathBuf::from(format!("/run/wgmesh/{iface}.pid")));
        lab.remove_on_drop(PathBuf::from(format!("/run/wgmesh/{iface}.log")));
        let mut text = String::from("[Interface]\n");
        if !case.no_key {
            text.push_str(&format!(
                "PrivateKey = {}\n",
                random_key().to_base64().as_str()
            ));
        }
        text.push_str(case.interface);
        text.push('\n');
        if !case.allowed_ips.is_empty() {
            text.push_str(&format!(
                "[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
                random_key().public_key(),
                case.allowed_ips
            ));
        }
        let file = lab.log_dir().join(format!("{iface}.conf"));
        support::write_secret(&file, &text);
        let file = file.to_str().expect("a UTF-8 path");

        let check = std::process::Command::new(WGMESH)
            .args(["conf", "check", file])
            .output()
            .expect("run wgmesh conf check");
        let up = lab
            .host("a")
            .expect("host a")
            .netns
            .try_exec(&[WGMESH, "wg", "up", file, "--name", &iface])
            .expect("run wgmesh wg up");
        if up.status.success() {
            let down = lab
                .exec("a", &[WGMESH, "wg", "down", &iface])
                .unwrap_or_else(|e| panic!("{}: wg down: {e}", case.name));
            assert!(down.status.success());
        }
        println!(
            "{:<40} conf check: {:<6} wg up: {}",
            case.name,
            if check.status.success() {
                "ok"
            } else {
                "refuse"
            },
            if up.status.success() { "ok" } else { "refuse" },
        );
        // The table is right about `up` (else it proves nothing)...
        assert_eq!(
            up.status.success(),
            case.up_accepts,
            "{}: wg up {} it:\n{text}\n{}",
            case.name,
            if up.status.success() {
                "took"
            } else {
                "refused"
            },
            text_of(&up)
        );
        // ... and `conf check` agrees with `up`, but for the one row.
        let check_accepts = check.status.success();
        let expected = case.up_accepts && !case.no_key;
        if check_accepts != expected {
            disagree.push(format!(
                "{}: conf check {} it, wg up {} it\n{text}--- conf check said:\n{}--- wg up said:\n{}",
                case.name,
                if check_accepts { "takes" } else { "refuses" },
                if case.up_accepts { "takes" } else { "refuses" },
                text_of(&check),
                text_of(&up)
            ));
        }
        if !check_accepts && !case.no_key {
            // Refused at a line, as every check of a value reports.
            let said = text_of(&check);
            assert!(said.contains(":line "), "{}: no line in {said}", case.name);
        }
    }
    assert!(
        disagree.is_empty(),
        "conf check and wg up disagree:\n\n{}",
        disagree.join("\n\n")
    );
}

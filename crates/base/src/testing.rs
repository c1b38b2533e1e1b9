//! Test support: one test of a test binary in a process of its own.
//!
//! Why: libtest runs a binary's tests on threads of one process, and some state is per process
//! (libtorch's generator, its collective recorder, rounding that other tests' work moves). A test
//! that must not share it runs itself again as a child process that runs only that test.

/// The environment variable that marks the child process, set to the test's name.
pub const CHILD_ENV: &str = "PROXIMA_TEST_CHILD";

/// Runs `body` for the test `name` in a child process of the current test binary (`--exact
/// name`, one test thread); in that child, runs `body` itself. Panics, with the child's output,
/// unless the child ran the test and it passed.
pub fn in_own_process(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(&exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, name)
        .output()
        .unwrap_or_else(|e| panic!("running {} for {name}: {e}", exe.display()));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{name} in its own process: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

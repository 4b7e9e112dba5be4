//! pods/exec of the file tree's fixed readers (`cat`, `tail -c`, `stat`, `realpath`, `find`)
//! as the user, on the path a file permit names.

use jitsh_broker_policy::FilePermit;

use super::remote::{self, Remote};
use super::{Impersonated, KubeError};

/// The `stat -c` format: raw mode (hex), size, atime, mtime, uid, gid.
const STAT_FORMAT: &str = "%f %s %X %Y %u %g";
/// The `find -printf` format: type, mode (octal), size, uid, gid, atime, mtime, name; NUL-ended.
const FIND_FORMAT: &str = "%y %m %s %U %G %A@ %T@ %P\\0";
/// Which fixed reader to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `cat -- PATH`.
    Cat,
    /// `tail -c +(N+1) -- PATH`: the file from byte N.
    From(u64),
    /// `stat [-L] -c FORMAT -- PATH`.
    Stat {
        /// Follow a final symbolic link (`stat -L`).
        follow: bool,
    },
    /// `realpath -e -- PATH`.
    Realpath,
    /// `find PATH -mindepth 1 -maxdepth 1 -printf FORMAT`.
    List,
}

impl Reader {
    /// The program it runs.
    pub fn program(self) -> &'static str {
        match self {
            Reader::Cat | Reader::From(0) => "cat",
            Reader::From(_) => "tail",
            Reader::Stat { .. } => "stat",
            Reader::Realpath => "realpath",
            Reader::List => "find",
        }
    }

    /// The argv for `path` (already permitted by the policy).
    pub fn argv(self, path: &str) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self {
            Reader::Cat | Reader::From(0) => v(&["cat", "--", path]),
            Reader::From(n) => v(&[
                "tail",
                "-c",
                &format!("+{}", n.saturating_add(1)),
                "--",
                path,
            ]),
            Reader::Stat { follow: true } => v(&["stat", "-L", "-c", STAT_FORMAT, "--", path]),
            Reader::Stat { follow: false } => v(&["stat", "-c", STAT_FORMAT, "--", path]),
            Reader::Realpath => v(&["realpath", "-e", "--", path]),
            // find has no `--`: a path starting with `-` would be an option, but every path here
            // is absolute (the policy only permits absolute, normalised paths).
            Reader::List => v(&[
                "find",
                path,
                "-mindepth",
                "1",
                "-maxdepth",
                "1",
                "-printf",
                FIND_FORMAT,
            ]),
        }
    }
}

/// Starts `reader` on the path the permit names (never client text) in the target container,
/// with `read_ahead` bytes of output buffered; stdout and stderr, no stdin.
pub(crate) async fn exec_reader(
    k: &Impersonated,
    permit: &FilePermit,
    reader: Reader,
    read_ahead: usize,
) -> Result<Remote, KubeError> {
    let target = permit.target();
    let argv = reader.argv(permit.path());
    let ap = remote::output_only(&target.container, read_ahead, 64 * 1024);
    let how = remote::Open::Exec(argv);
    remote::open(&k.client, &target.namespace, &target.pod, how, &ap).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_fixed_around_the_path() {
        assert_eq!(
            Reader::Cat.argv("/var/log/a b"),
            ["cat", "--", "/var/log/a b"]
        );
        assert_eq!(Reader::From(0).argv("/x"), ["cat", "--", "/x"]);
        assert_eq!(
            Reader::From(10).argv("/x"),
            ["tail", "-c", "+11", "--", "/x"]
        );
        assert_eq!(
            Reader::Stat { follow: true }.argv("/x"),
            ["stat", "-L", "-c", STAT_FORMAT, "--", "/x"]
        );
        assert_eq!(Reader::Realpath.argv("/x"), ["realpath", "-e", "--", "/x"]);
        assert_eq!(Reader::List.argv("/x")[..2], ["find", "/x"]);
    }
}

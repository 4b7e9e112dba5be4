//! jitsh-broker-policy: policy documents, command-line parsing and decisions with reasons.
//! Pure library: no I/O, no Kubernetes, no SSH.
//!
//! Status: the command-line parser is here; the policy language, evaluation and lint are not
//! built yet (see the issue tracker).

mod command_line;

pub use command_line::{
    CommandLine, MAX_ARGS, MAX_LINE_BYTES, SyntaxError, parse_command_line,
    parse_command_line_bytes, quote,
};

//! Container processes of simulated pods: sandboxing, logs, exec.

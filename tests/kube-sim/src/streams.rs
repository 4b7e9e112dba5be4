//! WebSocket channel protocols for pods/exec, pods/attach and pods/portforward.

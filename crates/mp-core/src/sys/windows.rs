//! Windows: named-pipe channels, `CreateProcess` spawn, job objects (in progress).

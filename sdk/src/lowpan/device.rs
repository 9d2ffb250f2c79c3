//! A 6LoWPAN device (work in progress).

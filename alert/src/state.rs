//! Alert state machine: inactive, pending, firing, resolved.

//! Scenario scripts: readable event sequences compiled to events.

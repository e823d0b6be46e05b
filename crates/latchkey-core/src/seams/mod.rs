//! What the core is handed from outside and never reaches for itself: the time ([`clock`]),
//! and the events every latchkey process sharing a store must learn ([`events`]).

pub mod clock;
pub mod events;

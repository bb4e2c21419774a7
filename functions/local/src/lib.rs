//! `local`: every function in one process on embedded defaults (DESIGN §7),
//! and the demo that tells the whole story on it.

pub mod demo;
pub mod inbox;
pub mod postgres;
pub mod queue;
pub mod redis_server;
pub mod services;
pub mod stack;
pub mod twilio_sim;

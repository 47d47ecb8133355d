pub mod hash;
pub mod index;
pub mod matcher;
pub mod cli;

pub mod cli;
pub mod hash;
pub mod index;
pub mod matcher;

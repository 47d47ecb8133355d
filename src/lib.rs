pub mod hash;
pub mod index;

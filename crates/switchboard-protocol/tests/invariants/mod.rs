pub mod from;

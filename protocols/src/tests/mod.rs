mod line;
mod strings;

"""``tidepool bench``: benchmark programs that print a table and write JSON."""

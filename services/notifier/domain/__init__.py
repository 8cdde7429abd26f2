"""Pure notifier logic: rendering, signing. No I/O."""

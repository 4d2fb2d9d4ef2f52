"""One task per capability: validate, predict, post. Models arrive built; nothing here loads weights."""

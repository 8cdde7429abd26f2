"""Pure orchestration rules: playbooks, the journey state machine, decisions. No I/O."""

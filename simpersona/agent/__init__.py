"""Shopping agents: a Playwright browser runtime (observations, actions, limits, outcomes),
the policy interface with a persona Markov policy, and session recordings.
See docs/agents.md.

Names are loaded on first use (PEP 562), so importing one module of the package (its policy
names, say) does not start the browser layer's imports.
"""

from __future__ import annotations

from simpersona.lazy import lazy_getattr

_EXPORTS = {
    "ActionError": "simpersona.agent.actions",
    "BrowserConfig": "simpersona.agent.browser",
    "BrowserPool": "simpersona.agent.browser",
    "BrowserUnavailable": "simpersona.agent.browser",
    "Element": "simpersona.agent.observation",
    "Goal": "simpersona.agent.policy",
    "MarkovConfig": "simpersona.agent.markov",
    "MarkovModel": "simpersona.agent.markov",
    "MarkovPolicy": "simpersona.agent.markov_policy",
    "Memory": "simpersona.agent.policy",
    "Observation": "simpersona.agent.observation",
    "observe": "simpersona.agent.observation",
    "OUTCOMES": "simpersona.agent.session",
    "parse_action": "simpersona.agent.actions",
    "Persona": "simpersona.agent.policy",
    "Policy": "simpersona.agent.policy",
    "read_recording": "simpersona.agent.recorder",
    "run_session": "simpersona.agent.runtime",
    "run_sessions": "simpersona.agent.runtime",
    "RuntimeConfig": "simpersona.agent.session",
    "ScriptedPolicy": "simpersona.agent.policy",
    "SessionRecorder": "simpersona.agent.recorder",
    "SessionResult": "simpersona.agent.session",
    "SessionSpec": "simpersona.agent.session",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)

"""Shopping agents: a Playwright browser runtime (observations, actions, limits, outcomes),
the policy interface with a persona Markov policy, and session recordings.
See docs/agents.md."""

from simpersona.agent.actions import ActionError, parse_action
from simpersona.agent.browser import BrowserConfig, BrowserPool, BrowserUnavailable
from simpersona.agent.markov import MarkovConfig, MarkovModel
from simpersona.agent.markov_policy import MarkovPolicy
from simpersona.agent.observation import Element, Observation, observe
from simpersona.agent.policy import Goal, Memory, Persona, Policy, ScriptedPolicy
from simpersona.agent.recorder import SessionRecorder, read_recording
from simpersona.agent.runtime import run_session, run_sessions
from simpersona.agent.session import OUTCOMES, RuntimeConfig, SessionResult, SessionSpec

__all__ = [
    "OUTCOMES",
    "ActionError",
    "BrowserConfig",
    "BrowserPool",
    "BrowserUnavailable",
    "Element",
    "Goal",
    "MarkovConfig",
    "MarkovModel",
    "MarkovPolicy",
    "Memory",
    "Observation",
    "Persona",
    "Policy",
    "RuntimeConfig",
    "ScriptedPolicy",
    "SessionRecorder",
    "SessionResult",
    "SessionSpec",
    "observe",
    "parse_action",
    "read_recording",
    "run_session",
    "run_sessions",
]

"""The instructor side of a task file: its prompt templates, re-solve rule and sample schema.

A task file names a shipped template (``le_math``), carries its own text, or says
nothing, and then gets lai's generic templates (``le_text``, ``lec_text``,
``random_text``, ``resolve_text``) filled with its ``lai.instructor.description``, the
fields of its sample schema and its example sample. Text a file carries is registered
with :func:`lai.instructor.prompts.register` as ``KIND_task_NAME``, so it is rendered and
hashed into the manifest like a shipped template.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from string import Template
from typing import Any

from lai.errors import ConfigError
from lai.instructor import prompts
from lai.tasks.base import ResolveRule
from lai.tasks.choice import RESOLVE_SCHEMA as CHOICE_RESOLVE_SCHEMA
from lai.tasks.choice import MultipleChoiceTask
from lai.tasks.spec import TaskSpec, Where

TEXT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "solution": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "solution", "answer"],
}
RESOLVE_TEXT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "answer": {"type": ["string", "number"]}},
    "required": ["reasoning", "answer"],
}


#: The placeholders each kind of instructor prompt fills (lai.strategies, lai.quality.verify).
PLACEHOLDERS = {
    "le": ("question", "response", "reference", "reason", "n"),
    "lec": ("question", "response", "reference", "reason", "n", "neighbours"),
    "random": ("question", "reference", "n"),
    "resolve": ("question",),
}


def check_placeholders(text: str, kind: str) -> None:
    """A template text a task file carries fills only what its kind of prompt is given:
    an unknown ``$name`` or a lone ``$`` would otherwise fail with a KeyError mid-run."""
    template = Template(text)
    allowed = PLACEHOLDERS[kind]
    if not template.is_valid():
        raise ConfigError(f"the template text has a '$' that starts no placeholder (write $$ for a dollar sign; it may use ${', $'.join(allowed)})")
    unknown = [name for name in template.get_identifiers() if name not in allowed]
    if unknown:
        raise ConfigError(f"the template text uses ${unknown[0]}, which a {kind} prompt does not fill (it fills ${', $'.join(allowed)}; write $$ for a dollar sign)")


def _template_name(task: str, kind: str, value: str | None, generic: str, fill: Mapping[str, str]) -> str:
    """A template value is either the name of an existing template or its text; absent,
    the generic template ``generic`` filled with the task's own description."""
    if value is not None and "\n" not in value and " " not in value:
        prompts.template_text(value)  # raises when there is no such template
        return value
    name = f"{kind}_task_{task}"
    if value is not None:
        check_placeholders(value, kind)
    if value is None:
        escaped = {k: v.replace("$", "$$") for k, v in fill.items()}
        value = Template(prompts.template_text(generic)).safe_substitute(escaped)
    prompts.register(name, value)
    return name


def instructor_side(spec: TaskSpec, where: Where) -> dict[str, Any]:
    instructor = spec.lai.instructor
    if instructor is None:
        return {"instructor_templates": {}, "resolve_rule": None, "sample_schema": {}}
    mc = spec.output_type == "multiple_choice"
    schema = instructor.sample_schema or (MultipleChoiceTask.sample_schema if mc else TEXT_SCHEMA)
    example = instructor.example or {name: f"<{name}>" for name in schema.get("properties", {})}
    check_sample_shape(spec, schema, example, where)
    fill = {
        "task_description": instructor.description or f"the task {spec.task}",
        "sample_fields": ", ".join(f'"{k}"' for k in schema.get("properties", {})),
        "sample_example": json.dumps(example, ensure_ascii=False),
    }
    templates: dict[str, str] = {}
    for kind in ("le", "lec", "random"):
        given = instructor.templates.get(kind)  # type: ignore[call-overload]
        if given is None and mc:
            given = f"{kind}_choice"
        try:
            templates[kind] = _template_name(spec.task, kind, given, f"{kind}_text", fill)
        except ConfigError as error:
            raise ConfigError(f"{where('lai', 'instructor', 'templates', kind)}: {error.message}") from None
    rule = None
    if instructor.resolve:
        given = instructor.resolve_template or ("resolve_choice" if mc else None)
        try:
            name = _template_name(spec.task, "resolve", given, "resolve_text", fill)
        except ConfigError as error:
            raise ConfigError(f"{where('lai', 'instructor', 'resolve_template')}: {error.message}") from None
        rule = ResolveRule(name, instructor.resolve_schema or (CHOICE_RESOLVE_SCHEMA if mc else resolve_schema(schema)))
    return {"instructor_templates": templates, "resolve_rule": rule, "sample_schema": schema}


JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")


def check_sample_shape(spec: TaskSpec, schema: dict[str, Any], example: dict[str, Any], where: Where) -> None:
    """The sample schema names JSON types, and the templates that read a written sample
    (``question``, ``solution``, ``answer``) render on the example: otherwise an endpoint
    refuses the schema, or every sample the instructor writes is dropped as malformed."""
    instructor = spec.lai.instructor
    assert instructor is not None
    properties = schema.get("properties")
    if schema.get("type", "object") != "object" or not isinstance(properties, dict) or not properties:
        raise ConfigError(f"{where('lai', 'instructor', 'sample_schema')}: give an object schema with properties (one per field of a sample)")
    for name, prop in properties.items():
        kinds = prop.get("type") if isinstance(prop, dict) else "(not a schema)"
        if kinds is None:  # an enum, an anyOf, ...: left to the endpoint
            continue
        if not isinstance(kinds, str | list) or not all(kind in JSON_TYPES for kind in ([kinds] if isinstance(kinds, str) else kinds)):
            raise ConfigError(f"{where('lai', 'instructor', 'sample_schema')}: property {name!r} needs a JSON type ({', '.join(JSON_TYPES)})")
    if spec.output_type == "multiple_choice":
        return
    from lai.tasks.spec import TemplateFailed, render

    for key in ("question", "solution", "answer"):
        try:
            render(getattr(instructor, key), example, key)
        except TemplateFailed as error:
            named = ("lai", "instructor", "example") if instructor.example else ("lai", "instructor", "sample_schema")
            raise ConfigError(f"{where(*named)}: the {key} template does not fit a sample of this shape ({error.message})") from None


def resolve_schema(sample_schema: dict[str, Any]) -> dict[str, Any]:
    """The re-solve reply: reasoning, then an answer of the type the sample's answer has."""
    answer = sample_schema.get("properties", {}).get("answer")
    if not isinstance(answer, dict) or "type" not in answer:
        return RESOLVE_TEXT_SCHEMA
    return {**RESOLVE_TEXT_SCHEMA, "properties": {"reasoning": {"type": "string"}, "answer": {"type": answer["type"]}}}

"""Phone numbers for routing rules in E.164, whatever the spelling (``docs/rules.md``): a
rule's numbers are read once and must be valid; a value at decision time is read once per
spelling (memoized) and matches nothing unless a possible number. ``phonenumbers`` loads
on first use."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import phonenumbers

__all__ = ["normalize_number", "number_problem", "rule_number", "rule_prefix", "rule_region"]

_SCHEME = re.compile(r"^(?:tel|sips?):", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s\-./()\u00a0]")
_MAX_INPUT = 64  # longer than any phone number with its punctuation


def _strip_uri(text: str) -> str:
    """The number part of ``tel:`` / ``sip:`` URIs (no host, no parameters)."""
    text = text.strip()
    if _SCHEME.match(text):
        text = text.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    return text


def _e164(number: phonenumbers.PhoneNumber) -> str:
    import phonenumbers

    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _candidates(text: str, region: str | None) -> Iterator[tuple[phonenumbers.PhoneNumber, bool]]:
    """Readings of ``text``, preferred first (lazily), each with whether it was written
    internationally (``+`` or ``00``)."""
    import phonenumbers

    text = _strip_uri(text)
    digits = _SEPARATORS.sub("", text)
    attempts: list[tuple[str, str | None, bool]] = []
    if digits.startswith("00") and digits[2:].isdigit():
        # The international call prefix of most of the world; with a region whose
        # prefix differs (011 in North America) this reading still comes first.
        attempts.append(("+" + digits[2:], None, True))
    if digits.startswith("+") or region is not None:
        attempts.append((text, region, digits.startswith("+")))
    if digits.isdigit() and not digits.startswith("0"):
        # Some SIP providers drop the "+": try the digits as an international number.
        attempts.append(("+" + digits, None, False))
    for candidate, where, explicit in attempts:
        try:
            number = phonenumbers.parse(candidate, where)
        except phonenumbers.NumberParseException:
            continue
        yield number, explicit


@functools.lru_cache(maxsize=4096)
def normalize_number(text: str, region: str | None = None) -> str | None:
    """``text`` (any common form; national ones read in ``region``) in E.164, or ``None``.
    Lenient (a possible number is enough, a valid one preferred): new ranges still match."""
    import phonenumbers

    if not isinstance(text, str) or not text or len(text) > _MAX_INPUT:
        return None
    seen: list[phonenumbers.PhoneNumber] = []
    for number, explicit in _candidates(text, region):
        # An international spelling is the number: no need to weigh other readings.
        possible = explicit and phonenumbers.is_possible_number(number)
        if possible or phonenumbers.is_valid_number(number):
            return _e164(number)
        seen.append(number)
    return next((_e164(n) for n in seen if phonenumbers.is_possible_number(n)), None)


_REASONS = {  # phonenumbers.ValidationResult names
    "INVALID_COUNTRY_CODE": "no country has the code it starts with",
    "TOO_SHORT": "too short for its country",
    "TOO_LONG": "too long for its country",
    "INVALID_LENGTH": "its length fits no number of its country",
    "IS_POSSIBLE_LOCAL_ONLY": "a local number without its area code",
}
_NO_REGION = "a national number, and the rule set has no phone_region to read it with"


def number_problem(text: object, region: str | None = None, *, strict: bool = False) -> str | None:
    """Why ``text`` is no phone number, in a few words without the number, or ``None``;
    ``strict`` asks for a *valid* number (a rule's), not only a possible one."""
    import phonenumbers

    if not isinstance(text, str):
        return "not a string"
    if not text.strip():
        return "empty"
    if len(text) > _MAX_INPUT:
        return f"longer than {_MAX_INPUT} characters"
    if not strict and normalize_number(text, region) is not None:
        return None
    digits = _SEPARATORS.sub("", _strip_uri(text))
    international = digits.startswith(("+", "00"))
    if not any(c.isdigit() for c in digits):
        return "it has no digits"
    if not digits.lstrip("+").isdigit():
        return "it has characters other than digits, spaces and - . / ( )"
    readings = list(_candidates(text, region))
    if region is None and not international and (strict or not readings):
        return _NO_REGION
    if not readings:
        try:
            phonenumbers.parse("+" + digits.lstrip("+").removeprefix("00"), None)
        except phonenumbers.NumberParseException as exc:
            if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
                return "no country has the code it starts with"
        return "not a phone number"
    number, _ = readings[0]
    reason = phonenumbers.is_possible_number_with_reason(number)
    for name, why in _REASONS.items():
        if reason == getattr(phonenumbers.ValidationResult, name):
            return why
    if strict and not phonenumbers.is_valid_number(number):
        return "no number of its country has this form"
    return None


def rule_region(value: object) -> str:
    """A rule set's ``phone_region``, upper-cased (ValueError if libphonenumber has none)."""
    import phonenumbers

    if not isinstance(value, str) or value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a two-letter region code libphonenumber knows, e.g. ES or US")
    return value.upper()


def rule_number(value: object, region: str | None) -> str:
    """A rule's ``phone`` value in E.164; ValueError (never naming it) unless valid."""
    import phonenumbers

    if not isinstance(value, str):
        raise ValueError(
            "write phone numbers as strings (quoted in YAML: an unquoted +34910000000 "
            "is read as an integer and loses its '+')"
        )
    for number, _ in _candidates(value, region) if len(value) <= _MAX_INPUT else []:
        if phonenumbers.is_valid_number(number):
            return _e164(number)
    raise ValueError(f"not a valid phone number: {number_problem(value, region, strict=True)}")


def rule_prefix(value: object) -> str:
    """A rule's ``phone_prefix`` as ``+`` and digits (``"+1 415"`` -> ``"+1415"``);
    ValueError unless international (``+`` or ``00``, then a country code)."""
    import phonenumbers

    if not isinstance(value, str):
        raise ValueError("write phone prefixes as strings, e.g. '+1 415'")
    digits = _SEPARATORS.sub("", _strip_uri(value))
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    body = digits[1:]
    if not digits.startswith("+") or not body.isdigit() or len(body) > 15:
        raise ValueError("expected an international prefix such as '+34' or '+1 415'")
    if not any(
        phonenumbers.region_code_for_country_code(int(body[:n])) != "ZZ"
        for n in range(1, min(3, len(body)) + 1)
    ):
        raise ValueError("the prefix starts with no known country code")
    return digits

"""Personal data, validated rather than matched by bare regex.

Each entity is one detector. A cheap test (an `@`, a digit) lets text without candidates skip
the regexes; candidates are then validated: phone numbers by `phonenumbers` (metadata of every
region), card numbers by Luhn and the issuers' prefixes and lengths, IBANs by the country's
length and mod-97, US SSNs by the SSA's allocation rules, IP addresses by `ipaddress`.

Deliberate choices (docs/guardrails.md):
- A national phone number (no `+`) must be written with a separator or parentheses
  (`415-555-2671`, `(415) 555 2671`) and its grouping must fit the region's format, so a bare
  order number or a date followed by an hour is not a phone number; `+` numbers may be bare.
- IP addresses need four dotted octets (version strings such as `1.2.3` are not addresses);
  loopback (127.0.0.0/8, ::1) and unspecified (0.0.0.0, ::) addresses identify nobody and are
  not reported; private, link-local and public addresses are.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

import phonenumbers

from crossway.guard.detectors._prefilter import Prefilter
from crossway.guard.detectors.base import Match

_DIGITS: Final = "0123456789"


def has_digit(text: str) -> bool:
    """Whether `text` holds an ASCII digit (ten substring tests: far cheaper than a regex)."""
    return any(d in text for d in _DIGITS)


# --- e-mail -----------------------------------------------------------------------------------

_EMAIL: Final = re.compile(
    r"(?<![\w.%+\-])"
    r"[\w%+\-]+(?:\.[\w%+\-]+)*"  # local part: no leading, trailing or double dot
    r"@"
    r"((?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+([^\W\d_]{2,63}))"  # labels, alphabetic TLD
    r"(?![\w\-]|\.[^\W_])"
)
_EMAIL_MAYBE: Final = Prefilter([r"[\pL\pN_%+\-]@[\pL\pN]"])
_NOT_TLDS: Final = frozenset(
    "png jpg jpeg gif svg webp bmp ico tif tiff css js mjs ts tsx jsx json map html htm txt "
    "md yaml yml toml lock log csv pdf zip gz tar py rb go rs java kt swift php".split()
)
"""File extensions that sit where a TLD would (`icon@2x.png`, `lodash@4.17.21.tgz`): not
addresses."""


def _in_url_userinfo(text: str, start: int) -> bool:
    """Whether `start` is inside a URL's `user:password@host` (the secrets detector's)."""
    token_start = max(text.rfind(c, 0, start) for c in " \t\r\n\"'<(") + 1
    return "://" in text[token_start:start]


class EmailDetector:
    """E-mail addresses (`EMAIL`): an RFC-5322-ish local part, dotted domain labels, an
    alphabetic top-level domain that is not a file extension."""

    entity: Final = "EMAIL"

    def __init__(self, name: str = "email") -> None:
        self.name = name

    def find(self, text: str) -> list[Match]:
        if "@" not in text or not _EMAIL_MAYBE.maybe(text):
            return []
        found = []
        for m in _EMAIL.finditer(text):
            if m.group(2).lower() in _NOT_TLDS:
                continue
            end = m.end()
            if _in_url_userinfo(text, m.start()):
                continue
            if text[end : end + 1] == ":" and text[end + 1 : end + 2] not in ("", " ", "\n"):
                continue  # an scp-style remote, git@github.com:org/repo
            found.append(Match(m.start(), m.end(), self.entity))
        return found


# --- phone numbers ----------------------------------------------------------------------------

_PHONE_CANDIDATE: Final = re.compile(
    r"(?<![\w+.\-/#])"
    r"(?:\+\d{1,3}(?:[ .\-]?\(0\))?[ .\-]?)?"  # +CC, optionally "+44 (0)"
    r"(?:\(\d{1,5}\)[ .\-]?)?"  # (area)
    r"\d{1,12}(?:[ .\-/]\d{1,12}){0,6}"  # digit groups with one separator between
    r"(?![\w]|[.\-/:]\d)"
)
_MIN_PHONE_DIGITS: Final = 7
_MAX_PHONE_DIGITS: Final = 15
_NATIONAL: Final = phonenumbers.PhoneNumberFormat.NATIONAL
_INTERNATIONAL: Final = phonenumbers.PhoneNumberFormat.INTERNATIONAL
_DIGIT_GROUP: Final = re.compile(r"\d+")
_DATE_LIKE: Final = re.compile(
    r"(?:19|20)\d\d[\-/.](?:0?[1-9]|1[0-2])[\-/.]\d\d|\d\d?[\-/.]\d\d?[\-/.](?:19|20)?\d\d"
)


def _boundaries(formatted: str) -> tuple[str, set[int]]:
    """The digits of a formatted number and the digit offsets where its groups end."""
    ends: set[int] = set()
    digits = []
    count = 0
    for group in _DIGIT_GROUP.findall(formatted):
        digits.append(group)
        count += len(group)
        ends.add(count)
    return "".join(digits), ends


def _grouping_fits(candidate: str, number: phonenumbers.PhoneNumber) -> bool:
    """Whether the candidate's digit groups split where the region's format splits (a
    group may span several of the format's groups, never end inside one)."""
    digits, ends = _boundaries(candidate)
    for fmt in (_INTERNATIONAL, _NATIONAL):
        expected_digits, expected_ends = _boundaries(phonenumbers.format_number(number, fmt))
        if digits == expected_digits:
            return ends <= expected_ends
        if digits.endswith(expected_digits):  # a trunk or country prefix the format omits
            shift = len(digits) - len(expected_digits)
            return {end - shift for end in ends if end > shift} <= expected_ends
    return True  # written in a way the formats do not show ("+44 (0)20 ..."): validity decides


class PhoneDetector:
    """Phone numbers (`PHONE`) that `phonenumbers` finds valid: `+` international numbers of
    any region, national numbers of `regions`."""

    entity: Final = "PHONE"

    def __init__(self, name: str = "phone", regions: Iterable[str] = ("US",)) -> None:
        self.name = name
        self.regions = tuple(regions)
        lengths: set[int] = set()
        for region in self.regions:
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"unknown phone region {region!r} (ISO 3166 alpha-2, e.g. US)")
            meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
            assert meta is not None and meta.general_desc is not None
            prefix = len(meta.national_prefix or "")
            for length in meta.general_desc.possible_length:
                lengths.update((length, length + prefix))
        # How many digits a national number of the regions can have (with its trunk prefix):
        # a candidate of another length is not parsed at all.
        self._national_lengths = frozenset(lengths)
        shortest = max(min(lengths, default=_MIN_PHONE_DIGITS), _MIN_PHONE_DIGITS)
        self._maybe = Prefilter(
            [r"\+\d(?:[ ().\-/]{0,2}\d){5,}", rf"\d(?:[ ().\-/]{{0,2}}\d){{{shortest - 1},}}"]
        )

    def _valid(self, candidate: str) -> bool:
        digits = sum(c.isdigit() for c in candidate)
        if not _MIN_PHONE_DIGITS <= digits <= _MAX_PHONE_DIGITS:
            return False
        international = candidate.startswith("+")
        if not international:
            if digits not in self._national_lengths:
                return False
            if candidate.isdigit():  # a bare digit run: an id, a timestamp, an amount
                return False
            if _DATE_LIKE.search(candidate):
                return False
        regions: Iterable[str | None] = (None,) if international else self.regions
        for region in regions:
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            # A "+" number's grouping is the writer's habit ("+34 912 345 678" is as
            # common as the format's "+34 912 34 56 78"); a national one's must fit.
            if phonenumbers.is_valid_number(number) and (
                international or _grouping_fits(candidate, number)
            ):
                return True
        return False

    def find(self, text: str) -> list[Match]:
        if not has_digit(text) or not self._maybe.maybe(text):
            return []
        found = []
        for m in _PHONE_CANDIDATE.finditer(text):
            candidate = m.group()
            if sum(c.isdigit() for c in candidate) < _MIN_PHONE_DIGITS:
                continue
            span = self._best_span(candidate)
            if span is not None:
                found.append(Match(m.start() + span[0], m.start() + span[1], self.entity))
        return found

    def _best_span(self, candidate: str) -> tuple[int, int] | None:
        """The candidate, or it without its last or first digit group (a number run into
        another: "call 415 555 2671 2 times"), if one is a valid number."""
        if self._valid(candidate):
            return 0, len(candidate)
        groups = list(_DIGIT_GROUP.finditer(candidate))
        if len(groups) < 3:
            return None
        last = groups[-2].end()
        if self._valid(candidate[:last]):
            return 0, last
        first = groups[1].start()
        if not candidate.startswith(("+", "(")) and self._valid(candidate[first:]):
            return first, len(candidate)
        return None


# --- payment cards ----------------------------------------------------------------------------

_CARD_MAYBE: Final = Prefilter([r"\d(?:[ \-]?\d){11,}"])
_CARD_CANDIDATE: Final = re.compile(r"(?<![\w\-.,])\d(?:[ \-]?\d){11,18}(?![\w]|[.,\-]\d)")


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The card network whose prefixes (IIN ranges) and lengths fit, or None."""
    n = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "mastercard"
    if two in (34, 37) and n == 15:
        return "amex"
    if (
        four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= six <= 622925
    ) and 16 <= n <= 19:
        return "discover"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38, 39)) and 14 <= n <= 19:
        return "diners"
    if two == 62 and 16 <= n <= 19:
        return "unionpay"
    if (two == 50 or 56 <= two <= 69) and 12 <= n <= 19:
        return "maestro"
    if 2200 <= four <= 2204 and 16 <= n <= 19:
        return "mir"
    return None


class CardDetector:
    """Payment card numbers (`CREDIT_CARD`): 12 to 19 digits, bare or grouped with one kind of
    separator, a known network's prefix and length, and a valid Luhn checksum."""

    entity: Final = "CREDIT_CARD"

    def __init__(self, name: str = "credit_card") -> None:
        self.name = name

    def find(self, text: str) -> list[Match]:
        if not has_digit(text) or not _CARD_MAYBE.maybe(text):
            return []
        found = []
        for m in _CARD_CANDIDATE.finditer(text):
            span = _card_span(m.group())
            if span is not None:
                found.append(Match(m.start() + span[0], m.start() + span[1], self.entity))
        return found


def _is_card(raw: str) -> bool:
    if " " in raw and "-" in raw:
        return False
    digits = raw.replace(" ", "").replace("-", "")
    return 12 <= len(digits) <= 19 and card_brand(digits) is not None and luhn_valid(digits)


def _card_span(raw: str) -> tuple[int, int] | None:
    """The candidate, or it without a short first or last digit group if that is a card (a
    number written next to a card, "Diners 14 3622 720627 1667", joins the candidate)."""
    if _is_card(raw):
        return 0, len(raw)
    groups = [g.span() for g in _DIGIT_GROUP.finditer(raw)]
    if len(groups) < 2:
        return None

    # Only short groups (a count, a year's tail) may be cut off: cutting a 4-digit group off
    # "1234 5678 9012 3456" would find a 12-digit card in a placeholder.
    def short(group: tuple[int, int]) -> bool:
        return group[1] - group[0] <= 3

    last = len(groups) - 1
    for i, j in ((1, last), (0, last - 1), (1, last - 1)):
        if i > j or not all(short(g) for g in groups[:i] + groups[j + 1 :]):
            continue
        start, end = groups[i][0], groups[j][1]
        if _is_card(raw[start:end]):
            return start, end
    return None


# --- IBAN -------------------------------------------------------------------------------------

IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
"""IBAN length per country (the SWIFT IBAN registry)."""

_IBAN_MAYBE: Final = Prefilter([r"[A-Z]{2}\d{2} ?[A-Z0-9]{4}"])
_IBAN_CANDIDATE: Final = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})(\d{2})((?: ?[A-Z0-9]{1,4}){3,9})")


def iban_valid(compact: str) -> bool:
    """Whether an IBAN without spaces has its country's length and a valid mod-97 check."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


class IbanDetector:
    """International bank account numbers (`IBAN`), compact or in groups of four, checked
    against the country's length and the mod-97 check digits."""

    entity: Final = "IBAN"

    def __init__(self, name: str = "iban") -> None:
        self.name = name

    def find(self, text: str) -> list[Match]:
        if not has_digit(text) or not _IBAN_MAYBE.maybe(text):
            return []
        found = []
        for m in _IBAN_CANDIDATE.finditer(text):
            length = IBAN_LENGTHS.get(m.group(1))
            if length is None:
                continue
            # Take exactly the country's length of characters (the candidate may run on into
            # the next word); the account must end there.
            end, count = m.start(), 0
            while end < m.end() and count < length:
                if text[end] != " ":
                    count += 1
                end += 1
            if count < length or (end < len(text) and text[end].isalnum()):
                continue
            compact = text[m.start() : end].replace(" ", "")
            if iban_valid(compact):
                found.append(Match(m.start(), end, self.entity))
        return found


# --- US social security numbers ---------------------------------------------------------------

_SSN_MAYBE: Final = Prefilter([r"\d{3}-\d{2}-\d{4}"])
_SSN: Final = re.compile(r"(?<![\w\-])(\d{3})-(\d{2})-(\d{4})(?![\w]|-\d)")


class SsnDetector:
    """US social security numbers (`US_SSN`) written NNN-NN-NNNN, with the SSA's rules: no
    area 000, 666 or 900-999, no group 00, no serial 0000."""

    entity: Final = "US_SSN"

    def __init__(self, name: str = "us_ssn") -> None:
        self.name = name

    def find(self, text: str) -> list[Match]:
        if "-" not in text or not has_digit(text) or not _SSN_MAYBE.maybe(text):
            return []
        found = []
        for m in _SSN.finditer(text):
            area, group, serial = m.groups()
            if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
                continue
            found.append(Match(m.start(), m.end(), self.entity))
        return found


# --- IP addresses -----------------------------------------------------------------------------

_IPV4: Final = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6: Final = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\d)"
)


_IPV4_MAYBE: Final = Prefilter([r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"])
_IPV6_MAYBE: Final = Prefilter([r"::", r"(?:[0-9A-Fa-f]{1,4}:){7}"])


def _reportable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (address.is_loopback or address.is_unspecified)


class IpDetector:
    """IPv4 (four dotted octets) and IPv6 addresses (`IP_ADDRESS`) that `ipaddress` accepts,
    except loopback and unspecified addresses."""

    entity: Final = "IP_ADDRESS"

    def __init__(self, name: str = "ip_address") -> None:
        self.name = name

    def find(self, text: str) -> list[Match]:
        found = []
        if "." in text and has_digit(text) and _IPV4_MAYBE.maybe(text):
            for m in _IPV4.finditer(text):
                try:
                    v4 = ipaddress.IPv4Address(m.group())
                except ValueError:
                    continue
                if _reportable(v4):
                    found.append(Match(m.start(), m.end(), self.entity))
        if ("::" in text or text.count(":") >= 7) and _IPV6_MAYBE.maybe(text):
            for m in _IPV6.finditer(text):
                raw = m.group()
                if raw.count(":") < 2 or ("::" not in raw and raw.count(":") != 7):
                    continue
                try:
                    v6 = ipaddress.IPv6Address(raw)
                except ValueError:
                    continue
                if _reportable(v6):
                    found.append(Match(m.start(), m.end(), self.entity))
        return found


PII_DETECTORS: Final = {
    "email": EmailDetector,
    "phone": PhoneDetector,
    "credit_card": CardDetector,
    "iban": IbanDetector,
    "us_ssn": SsnDetector,
    "ip_address": IpDetector,
}
"""The detector class of each PII entity."""

__all__ = [
    "IBAN_LENGTHS",
    "PII_DETECTORS",
    "CardDetector",
    "EmailDetector",
    "IbanDetector",
    "IpDetector",
    "PhoneDetector",
    "SsnDetector",
    "card_brand",
    "has_digit",
    "iban_valid",
    "luhn_valid",
]

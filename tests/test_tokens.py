"""Unsubscribe tokens: today's plain HMAC ones, and the itsdangerous ones in every email sent before them."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from itsdangerous import URLSafeSerializer

from newsletter.tokens import Tokens

KEY = "tests-only-key-0123456789-abcdefghijklmnop"
# Made by the code of before (itsdangerous URLSafeSerializer, salt "unsubscribe") with KEY, and
# frozen here: links like these are in readers' mailboxes for good.
OLD_TOKENS = {"NDI.fNS6V1y4egG_WhFp7Ru_gxyS5t8": 42, "MTIzNDU2Nzg5.G2DrRxfP3VO9vxfYuCK9tbSWFfk": 123456789}
IDS = [0, 1, 35, 36, 42, 1_000_000, 2**31, 2**63 - 1]
# Today's format, made with KEY by the code that first sent it (base64.b32encode) and frozen here:
# the same reader must get the same link, and the links already sent must keep working.
SENT_TOKENS = {"u16-tnxmh53vweqyydgb": 42, "ue13wu1og-2wtpksbyi6dlyukv": 2**40}
SENT_RETURN_PATH = ("m20261129-16-6awxrwdgojevhive", "20261129", 42)


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(KEY)


@pytest.mark.parametrize("subscriber_id", IDS)
def test_a_new_token_names_its_reader(tokens, subscriber_id):
    token = tokens.unsubscribe_token(subscriber_id)

    assert re.fullmatch(r"u[0-9a-z]{1,13}-[a-z2-7]{16}", token), token
    assert quote(token, safe="") == token, "nothing in it needs escaping in a URL or a mailto subject"
    assert tokens.subscriber_from_unsubscribe(token) == subscriber_id
    assert Tokens(KEY).subscriber_from_unsubscribe(token) == subscriber_id, "another process, the same key"


def test_a_new_token_survives_a_change_of_case(tokens):
    token = tokens.unsubscribe_token(987654)
    assert tokens.subscriber_from_unsubscribe(token.upper()) == 987654


@pytest.mark.parametrize("token", SENT_TOKENS)
def test_a_reader_keeps_the_token_already_sent_to_them(tokens, token):
    assert tokens.unsubscribe_token(SENT_TOKENS[token]) == token
    assert tokens.subscriber_from_unsubscribe(token) == SENT_TOKENS[token]


def test_a_return_path_already_sent_still_names_its_reader(tokens):
    token, issue_tag, subscriber_id = SENT_RETURN_PATH
    assert tokens.return_path_token(issue_tag, subscriber_id) == token
    read = tokens.read_return_path_token(token)
    assert (read.issue_tag, read.subscriber_id) == (issue_tag, subscriber_id)


@pytest.mark.parametrize("token", OLD_TOKENS)
def test_tokens_sent_before_still_work(tokens, token):
    assert tokens.subscriber_from_unsubscribe(token) == OLD_TOKENS[token]


@pytest.mark.parametrize("subscriber_id", IDS)
def test_tokens_itsdangerous_makes_still_work(tokens, subscriber_id):
    old = URLSafeSerializer(KEY, salt="unsubscribe").dumps(subscriber_id)
    assert tokens.subscriber_from_unsubscribe(old) == subscriber_id


def test_new_tokens_are_shorter_than_old_ones(tokens):
    old = URLSafeSerializer(KEY, salt="unsubscribe").dumps(123456789)
    assert len(tokens.unsubscribe_token(123456789)) < len(old)


def forgeries(tokens: Tokens) -> dict[str, str]:
    good = tokens.unsubscribe_token(42)
    body, mac = good.rsplit("-", 1)
    other_mac = tokens.unsubscribe_token(43).rsplit("-", 1)[1]
    old = next(iter(OLD_TOKENS))
    flipped = {f"mac char {i} changed": f"{body}-{mac[:i]}{'a' if mac[i] != 'a' else 'b'}{mac[i + 1:]}"
               for i in range(len(mac))}
    return {
        **flipped,
        "another reader's mac": f"{body}-{other_mac}",
        "id changed": f"u17-{mac}",  # 43
        "id with a leading zero": f"u0{body[1:]}-{mac}",
        "mac cut short": good[:-1],
        "mac too long": good + "a",
        "no prefix": good[1:],
        "other key": Tokens(KEY + "-other").unsubscribe_token(42),
        "return-path token": tokens.return_path_token("20170509", 42),
        "confirmation token": tokens.confirm_token(42),
        "old token, other salt": URLSafeSerializer(KEY, salt="confirm").dumps(42),
        "old token, other key": URLSafeSerializer(KEY + "-other", salt="unsubscribe").dumps(42),
        "old token damaged": old[:-1] + ("A" if old[-1] != "A" else "B"),
        "old token with a string": URLSafeSerializer(KEY, salt="unsubscribe").dumps("42"),
        "old token with a list": URLSafeSerializer(KEY, salt="unsubscribe").dumps([42]),
        "empty": "",
        "garbage": "not-a-token",
        "dot": ".",
        "non-ASCII": "u١٢-" + mac,
    }


def test_forged_or_damaged_tokens_are_refused(tokens):
    for name, token in forgeries(tokens).items():
        assert tokens.subscriber_from_unsubscribe(token) is None, name

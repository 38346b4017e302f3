"""Writes tests/data/tokenizer_corpus.txt: deterministic, multilingual lines for tokenizer tests.

One example per line. Inside a line, a backslash escapes: \\n newline, \\r carriage return,
\\t tab, \\\\ backslash. Run: python3 tests/data/make_tokenizer_corpus.py (no arguments).
"""
import pathlib
import random

ENGLISH = [
    "The quick harbor pilot steered the barge past three sleeping gulls.",
    "She's sure they'll ship it, but we've heard that before; I'd wait.",
    "Don't forget: THE MEETING'S at noon, and it'S in room B-12.",
    "A loss mask keeps the model from learning to imitate the user.",
    "Fine-tuning can quietly erode a model's refusals; measure first.",
    "Our tiny lab brewed coffee at 3am while the GPU fans hummed along.",
    "Is it 'color' or 'colour'? Both, depending on which side of the pond you're on.",
    "He said, \"Never trust a benchmark you didn't run yourself.\"",
    "Rain fell sideways across the parking lot; nobody minded.",
    "Tokenizers split text into pieces; merges glue the pieces back together.",
    "Caf\u00e9 owners in Montr\u00e9al serve cr\u00e8me br\u00fbl\u00e9e with na\u00efve pride.",
    "The decomposed form cafe\u0301 should become the composed form after NFC.",
    "Stra\u00dfe, \u00c5ngstr\u00f6m, \u0141\u00f3d\u017a and \u0130stanbul test the Latin extensions.",
    "Mixed CASE words like iPhone, eBay and McDonald's appear often.",
]
CHINESE = [
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002",
    "\u6a21\u578b\u5fae\u8c03\u4e4b\u540e\u9700\u8981\u91cd\u65b0\u8bc4\u4f30\u5b89\u5168\u6027\u3002",
    "\u8fd9\u4e2a\u5206\u8bcd\u5668\u5fc5\u987b\u548c\u53c2\u8003\u5b9e\u73b0\u5b8c\u5168\u4e00\u81f4\u3002",
    "\u5c0f\u732b\u5728\u7a97\u53f0\u4e0a\u7761\u89c9\uff0c\u9633\u5149\u6d12\u5728\u5b83\u7684\u80cc\u4e0a\u3002",
    "\u6211\u6709\u4e09\u4e2a\u95ee\u9898\uff1a\u4e3a\u4ec0\u4e48\uff1f\u600e\u4e48\u505a\uff1f\u4ec0\u4e48\u65f6\u5019\uff1f",
]
JAPANESE = [
    "\u4eca\u65e5\u306f\u3068\u3066\u3082\u6691\u3044\u3067\u3059\u306d\u3002\u30a2\u30a4\u30b9\u30af\u30ea\u30fc\u30e0\u3092\u98df\u3079\u307e\u3057\u3087\u3046\u3002",
    "\u30c8\u30fc\u30af\u30ca\u30a4\u30b6\u30fc\u306e\u30c6\u30b9\u30c8\u3092\u66f8\u304d\u307e\u3057\u305f\u3002",
    "\u6771\u4eac\u99c5\u304b\u3089\u65b0\u5e79\u7dda\u3067\u5927\u962a\u3078\u5411\u304b\u3044\u307e\u3059\u3002",
    "\uff8a\uff9d\uff76\uff78\uff76\uff80\uff76\uff85\u3068\u5168\u89d2\uff21\uff22\uff23\u3082\u6df7\u305c\u307e\u3059\u3002",
]
ARABIC = [
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0643\u0645 \u0641\u064a \u0627\u062e\u062a\u0628\u0627\u0631 \u0627\u0644\u0645\u062d\u0644\u0644 \u0627\u0644\u0644\u063a\u0648\u064a.",
    "\u0627\u0644\u0637\u0642\u0633 \u062c\u0645\u064a\u0644 \u0627\u0644\u064a\u0648\u0645\u060c \u0644\u0646\u0630\u0647\u0628 \u0625\u0644\u0649 \u0627\u0644\u0628\u062d\u0631.",
    "\u0627\u0644\u0639\u062f\u062f \u0661\u0662\u0663\u0664\u0665 \u0645\u0643\u062a\u0648\u0628 \u0628\u0627\u0644\u0623\u0631\u0642\u0627\u0645 \u0627\u0644\u0639\u0631\u0628\u064a\u0629.",
]
OTHER = [
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u042d\u0442\u043e \u043f\u0440\u043e\u0432\u0435\u0440\u043a\u0430 \u043a\u0438\u0440\u0438\u043b\u043b\u0438\u0446\u044b.",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\ub3c4 \ud1a0\ud06c\ub098\uc774\uc800\uac00 \ucc98\ub9ac\ud574\uc57c \ud569\ub2c8\ub2e4.",
    "\u0928\u092e\u0938\u094d\u0924\u0947, \u092f\u0939 \u090f\u0915 \u092a\u0930\u0940\u0915\u094d\u0937\u0923 \u0939\u0948\u0964",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03ba\u03b1\u03b9 \u05e2\u05d1\u05e8\u05d9\u05ea \u05d1\u05d0\u05d5\u05ea\u05d4 \u05e9\u05d5\u05e8\u05d4.",
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07\u0e23\u0e30\u0e2b\u0e27\u0e48\u0e32\u0e07\u0e04\u0e33",
]
EMOJI = [
    "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f9d1\u200d\U0001f4bb", "\u2764\ufe0f", "\U0001f1ef\U0001f1f5",
    "\U0001f469\U0001f3ff\u200d\U0001f52c", "\U0001f408\u200d\u2b1b", "\u270c\ufe0f", "\U0001f923\U0001f923\U0001f923",
]
CODE = [
    "def add(a, b):\\n    return a + b\\n",
    "for (int i = 0; i < n; ++i) {\\n\\tsum += x[i] * w[i];\\n}",
    "if __name__ == \"__main__\":\\n    main()",
    "const xs = [1, 2, 3].map((x) => x ** 2); // squares",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
    "std::vector<std::pair<int, float>> v{{1, 0.5f}, {2, 1.25f}};",
    "#include <stdio.h>\\nint main(void) { printf(\"%d\\\\n\", 42); }",
    "x = {\"key\": [true, false, null], 'nested': {\"a\": -1.5e-3}}",
    "git commit -m 'fix: off-by-one in merge ranks' && git push",
    "    indented_line = value  # trailing comment   ",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "<div class=\"row\"><span>&nbsp;&lt;tag&gt;</span></div>",
]
SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|begin_of_text|>",
    "<|start_header_id|>", "<|end_header_id|>", "<s>", "</s>",
    "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<think>", "</think>",
]
WORDS = ("alpha beta gamma delta river stone window orange seven quick slow bright model token merge "
         "safety adapter layer weight bias gradient batch epoch").split()


def digits(rng):
    n = rng.choice([1, 2, 3, 4, 5, 7, 10, 16, 25])
    return "".join(rng.choice("0123456789") for _ in range(n))


def whitespace(rng):
    return rng.choice([" " * rng.randint(2, 9), "\\t" * rng.randint(1, 3), "\\n" * rng.randint(1, 4),
                       " \\n ", "\\r\\n", "\u3000", "\u00a0", "  \\n\\n  ", "\\n \\n"])


def fragment(rng):
    kind = rng.randrange(12)
    if kind == 0: return rng.choice(ENGLISH)
    if kind == 1: return rng.choice(CHINESE)
    if kind == 2: return rng.choice(JAPANESE)
    if kind == 3: return rng.choice(ARABIC)
    if kind == 4: return rng.choice(OTHER)
    if kind == 5: return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    if kind == 6: return rng.choice(CODE)
    if kind == 7: return digits(rng) + rng.choice(["", ".", ",", " ", "%", "px"]) + digits(rng)
    if kind == 8: return whitespace(rng)
    if kind == 9: return rng.choice(SPECIALS)
    if kind == 10: return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
    return rng.choice(["it's", "WE'LL", "they'Re", "I'M", "o'clock", "rock'n'roll", "'quoted'", "--", "...", "?!"])


def main():
    rng = random.Random(20261127)
    lines = []
    # Every fixed sentence once on its own, then random mixtures.
    for group in (ENGLISH, CHINESE, JAPANESE, ARABIC, OTHER, CODE, EMOJI, SPECIALS):
        lines.extend(group)
    lines.append("")  # an empty example
    while len(lines) < 2400:
        parts = [fragment(rng) for _ in range(rng.randint(1, 5))]
        sep = rng.choice([" ", "", " ", "\\n", "  "])
        lines.append(sep.join(parts))
    for line in lines:
        assert "\n" not in line and "\r" not in line, line
    out = pathlib.Path(__file__).resolve().parent / "tokenizer_corpus.txt"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Generate a small, deterministic customer-support ticket dataset.

Writes ``support_tickets/train.csv`` (10 labeled tickets per class: the few labels
a small team has) and ``support_tickets/test.csv`` (the other 360, to measure on)
next to this script, columns ``text,label``, four classes: billing, technical,
shipping, account (100 rows each in all).

The texts are composed from many templates per class with slot fillers
(products, amounts, dates, order numbers, devices, error codes), varied tone
(polite / angry / terse), occasional typos and a share of deliberately
ambiguous tickets that mention vocabulary of another class. Vocabulary is
varied heavily (synonyms and paraphrases) so that a bag-of-words model does
not separate the classes perfectly, while a semantic model can do better.

Stdlib only; fully deterministic (random.Random(42)).

Usage:  python3 examples/make_support_tickets.py
"""

import csv
import os
import random
import re

SEED = 42
PER_CLASS = 100
MIN_WORDS, MAX_WORDS = 8, 30

SLOTS = {
    "product": [
        "wireless earbuds", "smart thermostat", "standing desk", "coffee grinder",
        "yoga mat", "desk lamp", "phone case", "bluetooth speaker", "air fryer",
        "backpack", "water bottle", "mechanical keyboard", "webcam", "hoodie",
        "running shoes", "gift card", "blender", "office chair",
    ],
    "plan": [
        "Pro plan", "Starter plan", "Team plan", "Premium membership",
        "annual subscription", "monthly subscription", "Business tier",
        "family plan",
    ],
    "amount": [
        "$9.99", "$19.99", "$24.50", "$49", "$129.00", "$7.49", "$312.80",
        "$59.95", "$15", "$88.20", "€34.90", "£12.99",
    ],
    "date": [
        "March 3", "last Tuesday", "yesterday", "the 14th", "two days ago",
        "June 21", "last week", "Monday", "the 1st of the month", "Oct 9",
        "this morning", "the weekend",
    ],
    "order": [
        "#A10482", "#A23917", "#B55102", "#C70033", "#A98214", "#D12876",
        "#B40961", "#C33750", "order 558213", "order 771904", "#E20415",
    ],
    "device": [
        "iPhone 13", "Pixel 7", "Samsung Galaxy S22", "Windows 11 laptop",
        "MacBook Air", "iPad", "Chromebook", "Android tablet",
        "work PC", "Windows 10 desktop",
    ],
    "browser": ["Firefox", "Chrome", "Safari", "Edge", "Brave"],
    "error": [
        "ERR-502", "E1043", "0x80070005", "error 500", "code 403",
        "SYNC_TIMEOUT", "E-17", "error 0xC004", "code 418", "ERR_CONN_RESET",
    ],
    "carrier": ["UPS", "FedEx", "DHL", "USPS", "the courier", "Royal Mail"],
    "city": [
        "Denver", "Leeds", "Toronto", "Austin", "Dublin", "Portland",
        "Lyon", "Melbourne",
    ],
    "days": ["three", "four", "five", "six", "ten", "twelve", "two"],
    "card": [
        "Visa", "Mastercard", "Amex", "debit card", "PayPal", "credit card",
        "bank card",
    ],
    "feature": [
        "the dashboard", "the export tool", "search", "the calendar view",
        "notifications", "the upload page", "reports", "the checkout page",
        "the sync feature", "dark mode",
    ],
    "email": [
        "jo.miller@gmail.com", "sam_k@outlook.com", "priya.r@yahoo.com",
        "dan@smallbiz.co", "l.chen@proton.me", "mark.t@work.org",
    ],
    "name": ["Anna", "Ben", "Carlos", "Dee", "Ed", "Fatima", "Greg", "Hana"],
}

OPENERS = {
    "polite": [
        "Hi,", "Hello,", "Hi there,", "Good morning,", "Hello team,",
        "Hi support,", "Dear support,", "Hey,",
    ],
    "angry": [
        "Seriously?", "This is ridiculous.", "Unbelievable.",
        "I'm really annoyed.", "Not happy at all.", "Third time writing.",
    ],
    "terse": [""],
}
CLOSERS = {
    "polite": [
        "Thanks!", "Thank you.", "Thanks in advance.", "Appreciate your help.",
        "Cheers.", "Many thanks.", "Kind regards.",
    ],
    "angry": [
        "Fix this now.", "Please sort this out ASAP.", "Very disappointed.",
        "I expect a reply today.", "Awful service.", "This is unacceptable.",
    ],
    "terse": ["", "", "thx", "pls advise", "asap"],
}

# --------------------------------------------------------------------------
# Templates. Each class has many paraphrased templates with deliberately
# varied vocabulary; the "ambiguous" lists borrow words from other classes.
# --------------------------------------------------------------------------
TEMPLATES = {
    "billing": [
        "I was charged twice for my {plan} on {date}.",
        "Looks like I got double billed this month, two payments of {amount} came out.",
        "Two identical payments of {amount} left my bank account {date}, only one should have.",
        "Why did my statement show {amount} when the price on your site was lower?",
        "I cancelled the trial but you still took {amount} from my {card}.",
        "Can I get a refund for {order}? I was told the money would be returned within a week.",
        "The refund for {order} still hasn't reached my {card}, it's been {days} weeks.",
        "I need an invoice with our company VAT number for the {amount} payment from {date}.",
        "Please send me a receipt for the {plan}, I need it for expenses.",
        "My {card} was declined at checkout even though there's plenty of money on it.",
        "How do I switch from monthly to yearly payments and what would it cost?",
        "You renewed my {plan} automatically without any warning, I want that money back.",
        "There's a mystery fee of {amount} on my last bill, what is it for?",
        "The coupon code didn't apply and I paid full price, {amount} instead of the discounted amount.",
        "Got an email saying my payment failed but my bank says it went through.",
        "Is sales tax included in the {amount} or added later?",
        "I was overcharged for {order}, the total should have been less than {amount}.",
        "Please update the billing address on my invoices to our new office in {city}.",
        "I downgraded to the {plan} but was still billed the old higher rate.",
        "Pending authorization of {amount} has been sitting on my card for {days} days.",
        "Do you offer a discount for nonprofits or students on the {plan}?",
        "The price went up from {amount} without notice, can you explain the increase?",
        "How do I get my money back for the {product}? I returned it {date}.",
        "Your system took {amount} from me on {date} and I never authorized it.",
        "My bank flagged a transaction from you for {amount} that I don't recognise.",
        "Could you split the {amount} charge into two separate invoices for accounting?",
        "Need a credit note for the cancelled portion of my {plan}.",
        "When is my next payment due and how much will be deducted?",
        "I'd like to pay by bank transfer instead of {card}, is that possible?",
        "the cost of my subscription doubled this cycle, did something change?",
    ],
    "technical": [
        "The app keeps crashing on my {device} whenever I open {feature}.",
        "Getting {error} every time I try to load {feature}.",
        "{feature} is just a blank white screen on {device}.",
        "The page won't load at all, it spins forever in {browser}.",
        "After the latest update the app freezes on startup on my {device}.",
        "Sync between my phone and laptop stopped working {date}, nothing updates.",
        "I can't upload files bigger than a few MB, it fails with {error}.",
        "My {product} won't pair with the companion app on {device}.",
        "The {product} keeps disconnecting from wifi every few minutes.",
        "Exports come out as empty CSV files, no data in them.",
        "Push notifications stopped arriving on my {device} since {date}.",
        "The website is extremely slow today, every click takes ages.",
        "Buttons on {feature} don't respond when I tap them on {device}.",
        "Your API returns {error} for requests that worked fine {date}.",
        "The firmware update bricked my {product}, it won't turn on anymore.",
        "Images are not displaying, just broken icons everywhere on {device}.",
        "Is there a known outage? Nothing loads and I see {error}.",
        "The installer fails halfway through on my {device} with {error}.",
        "Dark mode makes the text unreadable on {feature}.",
        "When I print a report the layout is completely broken.",
        "My {product} shows a red blinking light and stops responding.",
        "The search returns nothing even for things I know exist.",
        "Video calls drop after about a minute on {device}.",
        "Something is wrong with the integration, data stopped syncing with our CRM.",
        "Keeps throwing {error} when I save changes, lost my work twice.",
        "The app drains my {device} battery really fast since the update.",
        "Calendar entries show at the wrong time, looks like a timezone bug.",
        "Clicking the download link does nothing in {browser}.",
        "{product} app says device offline even though it is plugged in and on wifi.",
        "the screen goes black then the program quits, happens on {device}",
    ],
    "shipping": [
        "Where is my order {order}? It was supposed to arrive {date}.",
        "Tracking for {order} hasn't updated in {days} days.",
        "My parcel says delivered but there's nothing at my door.",
        "The {product} arrived damaged, the box was crushed.",
        "I received the wrong item, I ordered a {product} and got something else.",
        "Can I change the delivery address for {order} to my office in {city}?",
        "{carrier} left a note that they couldn't deliver, how do I reschedule?",
        "Do you ship to {city} and how long does it usually take?",
        "My package is stuck in customs, what do I need to do?",
        "Only half of {order} showed up, the {product} is missing.",
        "How much is express delivery to {city}?",
        "The courier marked it as returned to sender, why?",
        "It has been {days} days and my {product} still hasn't been dispatched.",
        "I need the {product} before Friday, can you upgrade the postage?",
        "The tracking number you sent doesn't work on the {carrier} website.",
        "Box came open and a couple of items fell out, {order}.",
        "Could you hold my package at the depot, I'm away until {date}.",
        "Estimated arrival keeps getting pushed back, now it says next week.",
        "I want to send back the {product}, how do I get a return label?",
        "The driver left my {product} out in the rain.",
        "Has {order} actually left your warehouse yet?",
        "Parcel went to my old house in {city}, can you redirect it?",
        "Two separate boxes were supposed to come but only one turned up.",
        "{carrier} says the label was never scanned, is my stuff even on its way?",
        "Ordered the {product} {date}, still says processing, when will it go out?",
        "Can I pick up {order} in person instead of having it delivered?",
        "The delivery was left with a neighbour I don't know, who signed for it?",
        "My {product} came with a cracked screen straight out of the packaging.",
        "Is there any way to speed up the dispatch of {order}?",
        "nothing has turned up yet and it's been {days} days since i paid",
    ],
    "account": [
        "I can't log in, it says my password is incorrect even after resetting it.",
        "The password reset email never arrives at {email}.",
        "How do I change the email on my profile to {email}?",
        "Please delete my account and all my personal data.",
        "I think someone else got into my account, there are logins from {city}.",
        "My account got locked after too many attempts, can you unlock it?",
        "How do I add another user to our {plan} workspace?",
        "I want to change my username, is that possible?",
        "Two-factor codes aren't being accepted when I sign in.",
        "I lost my phone and can't get the 2FA code, how do I get back in?",
        "Can you merge my two profiles? I signed up twice by mistake.",
        "How do I turn off the marketing emails you keep sending me?",
        "I'd like to download a copy of all the data you hold about me.",
        "My colleague {name} left the company, how do I transfer their seat to me?",
        "Where do I update my phone number in my profile settings?",
        "Your sign-in page keeps sending me back to the start after I enter my details.",
        "I never created an account with you but I'm getting emails at {email}.",
        "How can I make {name} an admin on our team?",
        "Please reactivate my account, I deactivated it by accident {date}.",
        "I forgot which email I used to register, can you help me find it?",
        "Can I have a separate login for each member of my family plan?",
        "Got a security alert about a new sign-in from {device}, that wasn't me.",
        "I want to change the name shown on my profile after getting married.",
        "How do I remove a device that is still signed in to my profile?",
        "The verification link in my welcome email has expired.",
        "Is it possible to pause my membership instead of closing it?",
        "How do I set a stronger password, the settings page won't let me.",
        "Please revoke access for {name}, they should no longer see our workspace.",
        "I'm unable to verify my identity, the code sent to my phone doesn't work.",
        "close my profile pls, i don't use the service anymore",
    ],
}

# Deliberately ambiguous tickets: the true label is the first word of the key,
# but the text is loaded with another class's vocabulary.
AMBIGUOUS = {
    "billing": [
        "The app crashed during checkout on my {device} and now I see two charges of {amount}.",
        "Your website showed {error} when I paid, was my card charged or not?",
        "My order {order} never arrived so I want my {amount} back.",
        "I deleted my account {date} but you still took {amount} from my {card}.",
        "I can't log in to download my invoices, and I need them for taxes today.",
        "Got charged for express delivery on {order} but it came by regular post.",
        "The update broke the app and I'm still paying for the {plan}, I want a partial refund.",
        "Shipping fee of {amount} was added at the end, nobody mentioned that.",
    ],
    "technical": [
        "The payment page crashes with {error} so I can't pay my bill.",
        "The tracking page in your app just shows {error} on {device}.",
        "Log in button does nothing in {browser}, the page just reloads.",
        "The invoice PDF downloads as a corrupted file that won't open.",
        "Checkout freezes when I click pay, tried {browser} and another browser.",
        "The order history screen is blank in the app on {device}.",
        "Password field won't let me paste anything on {device}, seems like a bug.",
        "The address autocomplete at checkout throws {error} and clears the form.",
    ],
    "shipping": [
        "I paid {amount} for next-day delivery and it's been {days} days.",
        "The app says my order {order} is delivered but it isn't here.",
        "I updated my address in my account but the parcel still went to the old one.",
        "Was charged for {order} {date} but it still shows not shipped.",
        "Your tracking link gives {error} so I have no idea where my box is.",
        "My {product} arrived but it won't switch on, looks broken in transit.",
        "I can't see my orders after logging in, has {order} even been sent?",
        "Refund me the postage if the package doesn't arrive by {date}.",
    ],
    "account": [
        "I want to close my account, my last order never arrived and I'm done.",
        "Someone used my login to place an order for {amount}, please secure my account.",
        "The app crashes when I try to change my password on {device}.",
        "Please remove my saved {card} from my profile and delete my details.",
        "I keep getting {error} when I try to sign in on {device}.",
        "How do I change the email where my receipts and invoices are sent?",
        "Cancel my {plan} and remove my profile completely, don't bill me again.",
        "Can I move my order history to a new account with {email}?",
    ],
}

AMBIGUOUS_PER_CLASS = 18  # roughly 18% of each class is ambiguous

KEYBOARD_TYPO_RATE = 0.12  # share of tickets with one typo


def fill(template, rng):
    def repl(m):
        return rng.choice(SLOTS[m.group(1)])
    return re.sub(r"\{(\w+)\}", repl, template)


def add_typo(text, rng):
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    kind = rng.randrange(3)
    j = rng.randrange(1, len(w) - 2)
    if kind == 0:  # swap adjacent letters
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif kind == 1:  # drop a letter
        w = w[:j] + w[j + 1:]
    else:  # double a letter
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def style(body, rng):
    tone = rng.choices(["polite", "angry", "terse"], weights=[5, 2, 3])[0]
    parts = []
    opener = rng.choice(OPENERS[tone])
    if opener and rng.random() < 0.7:
        parts.append(opener)
    parts.append(body)
    closer = rng.choice(CLOSERS[tone])
    if closer and rng.random() < 0.6:
        parts.append(closer)
    text = " ".join(parts)
    if tone == "terse" and rng.random() < 0.5:
        text = text.lower().rstrip(".")
    if rng.random() < KEYBOARD_TYPO_RATE:
        text = add_typo(text, rng)
    return text


def make_ticket(template, rng):
    for _ in range(50):
        text = style(fill(template, rng), rng)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            return text
    raise RuntimeError("could not satisfy length for: " + template)


def generate(rng):
    rows = []
    seen = set()
    for label in ["billing", "technical", "shipping", "account"]:
        n_amb = AMBIGUOUS_PER_CLASS
        plan = [("amb", t) for t in AMBIGUOUS[label]]
        while len(plan) < n_amb:
            plan.append(("amb", rng.choice(AMBIGUOUS[label])))
        plan = plan[:n_amb]
        normal = TEMPLATES[label]
        # every normal template used at least once, rest sampled
        regular = list(normal)
        while len(regular) < PER_CLASS - n_amb:
            regular.append(rng.choice(normal))
        plan += [("reg", t) for t in regular[: PER_CLASS - n_amb]]
        for _, template in plan:
            for _ in range(100):
                text = make_ticket(template, rng)
                if text not in seen:
                    break
            seen.add(text)
            rows.append((text, label))
    rng.shuffle(rows)
    return rows


TRAIN_PER_CLASS = 10


def main():
    rng = random.Random(SEED)
    rows = generate(rng)
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support_tickets")
    os.makedirs(folder, exist_ok=True)
    taken = {}
    train, test = [], []
    for text, label in rows:  # rows are shuffled: the first 10 of each class are a random sample
        taken[label] = taken.get(label, 0) + 1
        (train if taken[label] <= TRAIN_PER_CLASS else test).append((text, label))
    for name, part in (("train.csv", train), ("test.csv", test)):
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(part)
        print(f"wrote {len(part)} rows to {os.path.join(folder, name)}")


if __name__ == "__main__":
    main()

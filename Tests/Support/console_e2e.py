#!/usr/bin/env python3
"""Drives Keel's console in a real headless Chromium (Selenium) against a running `keel up`.

Usage: console_e2e.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD SCREENSHOT_DIR

Each scenario asserts what a user would see; a failed assertion ends the run with exit code 1 and the
reason on stderr. A screenshot of every page visited is saved in SCREENSHOT_DIR. Prints "ok" at the end.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE, ADMIN_EMAIL, ADMIN_PASSWORD, SHOTS = sys.argv[1:5]
os.makedirs(SHOTS, exist_ok=True)


def api(method, path, body=None, token=None, key=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(BASE + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode() or "null")


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def eventually(predicate, message, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(message)


def open_page(driver, url):
    """driver.get, once more if the browser itself failed (a crashed tab on a loaded machine): the page is then judged."""
    try:
        driver.get(url)
    except WebDriverException as failure:
        if isinstance(failure, TimeoutException):
            raise
        print(f"browser failed loading {url} ({failure.msg}); loading it again", file=sys.stderr)
        driver.get(url)


def browser():
    options = webdriver.ChromeOptions()
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"]:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver


def shot(driver, name):
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def wait(driver, condition, timeout=20):
    return WebDriverWait(driver, timeout).until(condition)


def sign_in(driver, email, password):
    open_page(driver, BASE + "/console/")
    wait(driver, EC.presence_of_element_located((By.ID, "email")))
    check("/console/login" in driver.current_url, "an anonymous visit did not go to the sign-in page")
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Overview"))


def sign_out(driver):
    driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait(driver, EC.presence_of_element_located((By.ID, "email")))


def post_from_page(driver, path, fields):
    """A form post made by script in the page, as a forged or stale form would be; returns the status."""
    return driver.execute_async_script("""
        const [path, fields, done] = arguments;
        fetch(path, {method: "POST", body: new URLSearchParams(fields), redirect: "manual", credentials: "same-origin"})
            .then(r => done(r.type === "opaqueredirect" ? 303 : r.status)).catch(e => done(String(e)));
    """, path, fields)


def main():
    status, login = api("POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    check(status == 200, f"API login failed: {status} {login}")
    token = login["access_token"]
    driver = browser()
    try:
        # Sign in; a wrong password is refused with a message and no session.
        open_page(driver, BASE + "/console/login")
        driver.find_element(By.ID, "email").send_keys(ADMIN_EMAIL)
        driver.find_element(By.ID, "password").send_keys("not-the-password")
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait(driver, EC.presence_of_element_located((By.ID, "signin-error")))
        check("Invalid email or password" in driver.find_element(By.ID, "signin-error").text, "a wrong password got no clear message")
        shot(driver, "01-sign-in-refused")
        sign_in(driver, ADMIN_EMAIL, ADMIN_PASSWORD)
        cookie = driver.get_cookie("keel_session")
        check(cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Lax", f"session cookie flags wrong: {cookie}")
        shot(driver, "02-overview")

        # A job enqueued over the API finishes while its page is open: the page updates itself.
        status, job = api("POST", "/api/v1/jobs", {"task": "keel.noop", "delay_seconds": 3, "tags": ["e2e"]}, token=token)
        check(status == 201, f"enqueue failed: {status} {job}")
        open_page(driver, BASE + f"/console/jobs/{job['id']}")
        check(driver.find_element(By.ID, "job-state").text == "scheduled", "a delayed job is not shown as scheduled")
        driver.execute_script("window.keelSamePage = true")
        wait(driver, EC.text_to_be_present_in_element((By.ID, "job-state"), "succeeded"), timeout=30)
        check(driver.execute_script("return window.keelSamePage === true"), "the page reloaded instead of updating live")
        shot(driver, "03-job-succeeded")

        # A job that fails until it is dead, retried from its page after confirming.
        status, failing = api("POST", "/api/v1/jobs", {"task": "http.request", "args": {"url": BASE + "/no-such-page"},
                                                      "max_attempts": 1, "tags": ["e2e"]}, token=token)
        check(status == 201, f"enqueue of the failing job failed: {status} {failing}")
        eventually(lambda: api("GET", f"/api/v1/jobs/{failing['id']}", token=token)[1]["state"] == "dead", "the failing job never died")
        open_page(driver, BASE + f"/console/jobs/{failing['id']}")
        check(driver.find_element(By.ID, "job-state").text == "dead", "the dead job is not shown as dead")
        check(len(driver.find_elements(By.CSS_SELECTOR, "table pre")) >= 1, "the dead job's error history is missing")
        shot(driver, "04-job-dead")
        driver.find_element(By.ID, "retry").click()
        wait(driver, EC.alert_is_present()).accept()
        wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, "p.notice[role=status]")))
        check("run again" in driver.find_element(By.CSS_SELECTOR, "p.notice[role=status]").text, "no notice after retrying")
        eventually(lambda: api("GET", f"/api/v1/jobs/{failing['id']}", token=token)[1]["attempt"] == 2, "the retry did not run the job again")
        shot(driver, "05-job-retried")

        # The jobs list shows what users typed as text, never as markup.
        status, marked = api("POST", "/api/v1/jobs", {"task": "keel.noop", "tags": ["<img src=x onerror=window.keelHacked=1>"]}, token=token)
        check(status == 201, "enqueue with an HTML tag failed")
        open_page(driver, BASE + "/console/jobs?tag=" + urllib.request.quote("<img src=x onerror=window.keelHacked=1>"))
        check("<img src=x onerror=window.keelHacked=1>" in driver.find_element(By.CSS_SELECTOR, "table.jobs").text, "the tag is not shown as text")
        check(driver.execute_script("return window.keelHacked === undefined"), "markup from a job's tag ran in the page")
        open_page(driver, BASE + "/console/jobs?task=" + "x" * 300)
        check("longer than 200 characters" in driver.page_source, "an oversized filter got no clear message")
        open_page(driver, BASE + "/console/jobs")
        shot(driver, "06-jobs")
        open_page(driver, BASE + "/console/workers")
        check(len(driver.find_elements(By.CSS_SELECTOR, "tbody tr code")) >= 1, "no worker is listed")
        shot(driver, "07-workers")

        # A schedule: the form previews the next five fire times in its time zone, then saves.
        open_page(driver, BASE + "/console/schedules")
        driver.find_element(By.ID, "s-name").send_keys("e2e-nightly")
        driver.find_element(By.ID, "s-cron").send_keys("30 2 * * *")
        driver.find_element(By.ID, "s-timezone").send_keys("Europe/Berlin")
        driver.find_element(By.ID, "s-task").send_keys("keel.noop")
        # The preview follows the typing: wait for the one in the schedule's time zone (Berlin: +01:00 or +02:00).
        def berlin_preview(d):
            # Read in one script call: the preview is replaced as answers arrive, so held elements go stale.
            items = d.execute_script("return [...document.querySelectorAll('#schedule-preview ol.upcoming li')].map(li => li.textContent)")
            return len(items) == 5 and all("02:30:00+01:00" in i or "02:30:00+02:00" in i for i in items)
        try:
            wait(driver, berlin_preview)
        except TimeoutException:
            raise AssertionError("the preview never showed five fire times in the schedule's time zone: "
                                 + driver.find_element(By.ID, "schedule-preview").text)
        driver.find_element(By.ID, "s-cron").clear()
        driver.find_element(By.ID, "s-cron").send_keys("61 * * * *")
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#schedule-preview .error")) == 1)
        driver.find_element(By.ID, "s-cron").clear()
        driver.find_element(By.ID, "s-cron").send_keys("30 2 * * *")
        driver.find_element(By.CSS_SELECTOR, "#schedule-form button[type=submit]:not([formmethod])").click()
        wait(driver, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.notice[role=status]"), "saved"))
        check("e2e-nightly" in driver.find_element(By.TAG_NAME, "table").text, "the new schedule is not listed")
        status, schedule = api("GET", "/api/v1/schedules/e2e-nightly", token=token)
        check(status == 200 and schedule["timezone"] == "Europe/Berlin" and len(schedule["upcoming"]) == 5, f"schedule not stored: {schedule}")
        shot(driver, "08-schedules")

        # An API key, shown once with a copy button, that works against the API.
        open_page(driver, BASE + "/console/keys")
        driver.find_element(By.ID, "k-name").send_keys("e2e reader")
        driver.find_element(By.CSS_SELECTOR, "input[name=permissions][value='jobs:read']").click()
        driver.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
        wait(driver, EC.presence_of_element_located((By.ID, "api-key")))
        key = driver.find_element(By.ID, "api-key").text
        check(key.startswith("keel_"), f"no key shown: {key!r}")
        check(driver.find_element(By.CSS_SELECTOR, "[data-copy=api-key]").is_displayed(), "no copy button")
        shot(driver, "09-api-key")
        status, listed = api("GET", "/api/v1/jobs?limit=1", key=key)
        check(status == 200, f"the new key does not work: {status} {listed}")
        status, _ = api("POST", "/api/v1/jobs", {"task": "keel.noop"}, key=key)
        check(status == 403, f"a jobs:read key could enqueue: {status}")
        open_page(driver, BASE + "/console/keys")
        check(key not in driver.page_source, "the key is shown again")

        # A forged form (no or a wrong CSRF token) is refused and changes nothing.
        check(post_from_page(driver, f"/console/jobs/{failing['id']}/cancel", {"_csrf": "forged"}) == 403, "a forged CSRF token was accepted")
        check(post_from_page(driver, f"/console/jobs/{failing['id']}/cancel", {}) == 403, "a form without a CSRF token was accepted")

        open_page(driver, BASE + "/console/users")
        shot(driver, "10-users")
        open_page(driver, BASE + "/console/audit?action=apikey.create")
        check("apikey.create" in driver.find_element(By.TAG_NAME, "table").text, "the audit log does not show the key's creation")
        shot(driver, "11-audit")

        # The gateway's routes with their upstream instances' health, and the AI gateway's providers and models.
        status, route = api("POST", "/api/v1/gateway/routes", {"name": "e2e-status", "match": {"prefix": "/e2e-status"},
                                                              "upstreams": [{"url": BASE + "/healthz"}], "auth": "public"}, token=token)
        check(status == 201, f"creating a gateway route failed: {status} {route}")
        open_page(driver, BASE + "/console/gateway")
        check("e2e-status" in driver.page_source and "healthy" in driver.page_source, "the gateway page does not show the route's instance health")
        shot(driver, "14-gateway")
        status, provider = api("POST", "/api/v1/ai/providers", {"name": "e2e-local", "kind": "openai", "base_url": BASE + "/v1"}, token=token)
        check(status == 201, f"creating an AI provider failed: {status} {provider}")
        status, model = api("POST", "/api/v1/ai/models", {"name": "e2e-chat", "deployments": [{"provider": "e2e-local", "model": "tiny"}]}, token=token)
        check(status == 201, f"creating an AI model failed: {status} {model}")
        open_page(driver, BASE + "/console/ai")
        check("e2e-local" in driver.page_source and "e2e-local/tiny" in driver.page_source, "the AI page does not show the provider and deployment")
        shot(driver, "15-ai")
        open_page(driver, BASE + "/console/")
        check("/healthz" in driver.find_element(By.ID, "upstreams-heading").find_element(By.XPATH, "..").text, "the overview lacks the upstream service")
        shot(driver, "16-overview-after")

        # A viewer sees no admin pages or controls, and is refused when trying them anyway.
        status, viewer = api("POST", "/api/v1/users", {"email": "viewer@example.com", "name": "Vera Viewer", "password": "viewer-passphrase-22",
                                                      "roles": ["viewer"]}, token=token)
        check(status == 201, f"creating the viewer failed: {status} {viewer}")
        sign_out(driver)
        stale = driver.get_cookie("keel_session")
        check(stale is None or stale.get("value") in (None, ""), "sign-out left the session cookie")
        sign_in(driver, "viewer@example.com", "viewer-passphrase-22")
        nav = driver.find_element(By.CSS_SELECTOR, "header nav").text
        check("Jobs" in nav and "Users" not in nav and "Audit" not in nav, f"the viewer's navigation is wrong: {nav}")
        open_page(driver, BASE + "/console/jobs")
        check(not driver.find_elements(By.CSS_SELECTOR, "form[action$='/pause'], form[action$='/purge'], form[action='/console/jobs/retry-dead']"),
              "the viewer is shown queue controls")
        open_page(driver, BASE + f"/console/jobs/{failing['id']}")
        check(not driver.find_elements(By.ID, "retry") and not driver.find_elements(By.ID, "cancel"), "the viewer is shown job controls")
        csrf = driver.find_element(By.CSS_SELECTOR, "meta[name=csrf-token]").get_attribute("content")
        check(post_from_page(driver, f"/console/jobs/{failing['id']}/retry", {"_csrf": csrf}) == 403, "the viewer could retry a job")
        open_page(driver, BASE + "/console/users")
        check("403" in driver.find_element(By.TAG_NAME, "h1").text, "the viewer could open the users page")
        shot(driver, "12-viewer-refused")
        open_page(driver, BASE + "/console/schedules")
        check(not driver.find_elements(By.ID, "schedule-form"), "the viewer is shown the schedule form")
        shot(driver, "13-viewer-schedules")

        # After sign-out, an old page's form finds its session ended.
        sign_out(driver)
        status = post_from_page(driver, f"/console/jobs/{failing['id']}/retry", {"_csrf": csrf})
        check(status == 401, f"a form from an ended session was not refused: {status}")
        print("ok")
    finally:
        driver.quit()


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, TimeoutException) as failure:
        print(f"FAILED: {failure!r}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        import traceback
        traceback.print_exc()
        print("FAILED: an unexpected error (above)", file=sys.stderr)
        sys.exit(1)
